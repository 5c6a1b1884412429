"""Benchmarks for wsplugin: servers, a picows load generator and an orchestrator (not shipped)."""
