"""Connection tokens: what a signed token grants a connection (``tokens``), and the JWT
verifier behind ``authenticate=JWTAuth(...)`` (``jwt``, optional extra ``wsplugin[jwt]``).

Where a token travels and when it is checked is the endpoint's business
(:mod:`wsplugin.endpoint.tokens`); this package only turns a token into a :class:`Grant`.
"""
