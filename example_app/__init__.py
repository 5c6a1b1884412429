"""A small chat built on wsplugin: ``uvicorn example_app.main:app``."""
