"""Detecting several workers, so that the memory backend can warn (``wsplugin/workers.py``)."""

from __future__ import annotations

import logging

import pytest

from wsplugin.workers import detect_workers, warn_if_memory_shared, workers_in_argv

UVICORN_MAIN = "/venv/lib/python3.11/site-packages/uvicorn/__main__.py"


@pytest.mark.parametrize(
    ("argv", "count"),
    [
        ([UVICORN_MAIN, "app:app", "--workers", "4"], 4),
        (["/venv/bin/uvicorn", "app:app", "--workers=3"], 3),
        (["/venv/bin/python", "-m", "uvicorn", "app:app", "--workers", "2"], 2),
        (["/venv/bin/uvicorn", "app:app", "-w", "2"], 0),  # not a uvicorn flag
        (["/venv/bin/gunicorn", "-k", "uvicorn.workers.UvicornWorker", "-w", "2", "app"], 2),
        (["/venv/bin/gunicorn", "-w3", "app"], 3),
        (["/venv/bin/hypercorn", "app:app", "-w", "5"], 5),
        (["/venv/bin/granian", "--interface", "asgi", "--workers", "2", "app:app"], 2),
        (["/venv/bin/uvicorn", "app:app"], 0),
        (["/venv/bin/pytest", "--workers", "8"], 0),  # not a server
        (["/venv/bin/uvicorn", "app:app", "--workers"], 0),
    ],
)
def test_workers_in_argv(argv: list[str], count: int) -> None:
    assert workers_in_argv(argv) == count


def test_web_concurrency_wins() -> None:
    assert detect_workers({"WEB_CONCURRENCY": "3"}, [], []) == (3, "WEB_CONCURRENCY=3")


def test_gunicorn_cmd_args() -> None:
    count, how = detect_workers({"GUNICORN_CMD_ARGS": "--bind :80 --workers 2"}, [], [])
    assert count == 2 and "GUNICORN_CMD_ARGS" in how


def test_parent_command_line() -> None:
    parent = ["/venv/bin/python", "-m", "gunicorn", "-w", "2", "app:app"]
    assert detect_workers({}, ["/venv/bin/python"], parent) == (
        2, "gunicorn --workers 2 (parent's command line)")


def test_one_worker() -> None:
    assert detect_workers({"WEB_CONCURRENCY": "1"}, ["/venv/bin/uvicorn", "app:app"], []) == (
        1, "")


def test_warning_only_for_the_memory_backend(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("WEB_CONCURRENCY", "2")
    caplog.set_level(logging.WARNING, "wsplugin")
    assert warn_if_memory_shared("redis://localhost:6379/0") is False
    assert caplog.records == []
    assert warn_if_memory_shared("memory://") is True
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert 'backend="redis://..."' in record.getMessage()
    assert "WEB_CONCURRENCY=2" in record.getMessage()


def test_no_warning_for_one_worker(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("WEB_CONCURRENCY", raising=False)
    monkeypatch.delenv("GUNICORN_CMD_ARGS", raising=False)
    caplog.set_level(logging.WARNING, "wsplugin")
    assert warn_if_memory_shared("memory://") is False  # pytest's own command line
    assert caplog.records == []
