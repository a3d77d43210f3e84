"""django_websocket.metrics and django_websocket.counters, in process.

The plain counters as the handler and the connection keep them (through the in-process
``WebSocketClient``), their push into ``prometheus_client`` by differences, the view, the
multiprocess files' clean-up, the system checks, a missing ``prometheus_client``, and the
shipped Grafana dashboard, whose queries may only name metrics the view exports.
``tests/test_metrics_integration.py`` runs two real gunicorn workers.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from types import SimpleNamespace

import gevent
import pytest
from django.core.checks import run_checks
from django.core.exceptions import ImproperlyConfigured
from django.test import RequestFactory, override_settings

from django_websocket import blocking, checks, metrics
from django_websocket.connection import rate_limit_counters
from django_websocket.counters import Counters, counters, messages_in
from django_websocket.exceptions import ConnectionClosed
from django_websocket.handler import owner_connections
from django_websocket.testing import HandshakeRejected, WebSocketClient
from tests.servers import ROOT

prometheus_client = pytest.importorskip("prometheus_client")
prometheus_parser = pytest.importorskip("prometheus_client.parser")

DASHBOARD = ROOT / "test_project" / "deploy" / "grafana-dashboard.json"


def snapshot() -> dict:
    """The process's counters now, to compare with after a scenario."""
    return {
        "received": counters.messages_received,
        "sent": counters.messages_sent,
        "bytes_received": counters.bytes_received,
        "bytes_sent": counters.bytes_sent,
        "handshakes": dict(counters.handshakes),
        "closes": dict(counters.closes),
    }


def gained(before: dict, name: str, key: int) -> int:
    return getattr(counters, name).get(key, 0) - before[name].get(key, 0)


def wait_until(condition, timeout: float = 5.0) -> None:
    """Yield to the server's greenlets until *condition()* holds; fail after *timeout*."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        gevent.sleep(0.01)


@pytest.fixture
def registry():
    """A private registry, so each test has its own metrics."""
    return prometheus_client.CollectorRegistry()


# ---------------------------------------------------------------- the plain counters


def test_echo_counts_messages_bytes_handshake_and_close(db):
    """One echo socket: a 101, 2 messages each way, bytes both ways, and close code 1000 once."""
    before = snapshot()
    with WebSocketClient().connect("/echo/") as websocket:
        websocket.send("hello")
        websocket.send(b"\x00\x01")
        assert [websocket.receive(), websocket.receive()] == ["hello", b"\x00\x01"]
    wait_until(lambda: gained(before, "closes", 1000) == 1)
    assert gained(before, "handshakes", 101) == 1
    assert counters.messages_received - before["received"] == 2
    assert counters.messages_sent - before["sent"] == 2
    # Client frames are masked (6 bytes of header each here), plus the close frame.
    assert counters.bytes_received - before["bytes_received"] >= (6 + 5) + (6 + 2)
    assert counters.bytes_sent - before["bytes_sent"] >= (2 + 5) + (2 + 2)


def test_refusals_are_counted_by_status(db):
    """404 and 403 before the accept count under their status, not as 101."""
    before = snapshot()
    client = WebSocketClient()
    for path, status in (("/nope/", 404), ("/forbidden/", 403)):
        with pytest.raises(HandshakeRejected) as refused:
            client.connect(path)
        assert refused.value.status == status
    assert gained(before, "handshakes", 404) == gained(before, "handshakes", 403) == 1
    assert gained(before, "handshakes", 101) == 0


def test_server_close_code_is_counted(db):
    """A view closing with 4001 counts closes[4001]."""
    before = snapshot()
    with WebSocketClient().connect("/close/") as websocket:
        with pytest.raises(ConnectionClosed):
            websocket.receive()
    wait_until(lambda: gained(before, "closes", 4001) == 1)


@override_settings(WEBSOCKET_MESSAGE_RATE_LIMIT=(3, 60))
def test_rate_limit_close_counts_1008_and_its_own_counter(db):
    """Past the rate limit: closes[1008] and rate_limit_counters.closes, once each."""
    before, limited = snapshot(), rate_limit_counters.closes
    with WebSocketClient().connect("/echo/") as websocket:
        for index in range(6):
            websocket.send(f"m{index}")
        with pytest.raises(ConnectionClosed):
            while True:
                websocket.receive()
    wait_until(lambda: gained(before, "closes", 1008) == 1)
    assert rate_limit_counters.closes == limited + 1


def test_handshake_latency_goes_to_the_observer(db):
    """With an observer set, each 101 reports one duration in seconds."""
    seen: list[float] = []
    previous, counters.observe_handshake = counters.observe_handshake, seen.append
    try:
        with WebSocketClient().connect("/echo/"):
            pass
    finally:
        counters.observe_handshake = previous
    assert len(seen) == 1 and 0 < seen[0] < 5


def test_messages_in_counts_data_messages_of_joined_frames():
    """One per FIN data frame (text, binary, last continuation); control and first fragments are not."""
    text = bytes((0x81, 5)) + b"hello"
    medium = bytes((0x82, 126)) + (300).to_bytes(2, "big") + b"x" * 300
    big = bytes((0x82, 127)) + (70000).to_bytes(8, "big") + b"y" * 70000
    first_fragment, last_fragment = bytes((0x01, 1)) + b"a", bytes((0x80, 1)) + b"b"
    ping = bytes((0x89, 0))
    assert messages_in(text) == 1
    assert messages_in(text + medium + big) == 3
    assert messages_in(first_fragment + ping + last_fragment) == 1
    frames = b"".join([text] * 4)
    assert messages_in(frames) == 4
    assert messages_in(frames) == 4  # the cached answer for the same object


# ---------------------------------------------------------------- into prometheus_client


def test_push_adds_differences_only(registry):
    """Counters gain what the totals gained since the last push; a lower total adds nothing."""
    exporter = metrics.Exporter(registry)
    handshakes, sent = (
        ("django_websocket_handshakes_total", "101"),
        ("django_websocket_messages_sent_total", ""),
    )
    exporter.push({handshakes: 3, sent: 10}, 2)
    exporter.push({handshakes: 5, sent: 10}, 4)
    assert registry.get_sample_value("django_websocket_handshakes_total", {"status": "101"}) == 5
    assert registry.get_sample_value("django_websocket_messages_sent_total") == 10
    assert registry.get_sample_value("django_websocket_connections") == 4
    exporter.push({sent: 4}, 0)  # a source that started again
    exporter.push({sent: 6}, 0)
    assert registry.get_sample_value("django_websocket_messages_sent_total") == 12


HANDSHAKE_SECONDS = [0.0004, 0.001, 0.0011, 0.003, 0.003, 0.07, 0.7, 9.0, 10.0, 12.5, 0.0025]


def histogram_samples(registry) -> dict:
    """The handshake histogram's samples in *registry*: ``{(name, le): value}``."""
    (family,) = [family for family in registry.collect() if family.name == metrics.HANDSHAKE_DURATION]
    return {
        (sample.name, sample.labels.get("le")): sample.value
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


def test_handshake_latencies_pushed_equal_the_histograms_own_observations(registry):
    """Counted per bucket, then pushed: the same buckets, count and sum as observe() per handshake."""
    exporter = metrics.Exporter(registry)
    assert exporter.observe_handshake == exporter.latencies.observe  # batched, not per handshake
    direct = prometheus_client.CollectorRegistry()
    reference = prometheus_client.Histogram(
        metrics.HANDSHAKE_DURATION, "reference", buckets=metrics.HANDSHAKE_BUCKETS, registry=direct
    )
    for seconds in HANDSHAKE_SECONDS[:5]:
        exporter.observe_handshake(seconds)
        reference.observe(seconds)
    assert histogram_samples(registry)[metrics.HANDSHAKE_DURATION + "_count", None] == 0  # until a push
    exporter.push({}, 0)
    for seconds in HANDSHAKE_SECONDS[5:]:
        exporter.observe_handshake(seconds)
        reference.observe(seconds)
    exporter.push({}, 0)
    exporter.push({}, 0)  # nothing new: nothing added twice
    pushed, observed = histogram_samples(registry), histogram_samples(direct)
    assert pushed.keys() == observed.keys()
    for key, value in observed.items():
        assert pushed[key] == pytest.approx(value), key
    assert pushed[metrics.HANDSHAKE_DURATION + "_bucket", "0.001"] == 2  # 0.001 itself is in le="0.001"


def test_a_histogram_without_per_bucket_values_is_observed_directly(registry, monkeypatch):
    """Another prometheus_client's Histogram (no _buckets/_sum as expected): observe() per handshake."""

    class OtherHistogram(prometheus_client.Histogram):
        def _metric_init(self):
            super()._metric_init()
            self.values = self._buckets
            del self._buckets

    monkeypatch.setattr(prometheus_client, "Histogram", OtherHistogram)
    exporter = metrics.Exporter(registry)
    assert exporter.observe_handshake == exporter.handshake_duration.observe
    exporter.push({}, 0)


def test_totals_read_every_source(monkeypatch):
    """totals() takes the connection counters, the limits, the blocked-loop monitor and every hub."""
    fresh = Counters()
    fresh.messages_received, fresh.messages_sent, fresh.bytes_received, fresh.bytes_sent = 1, 2, 3, 4
    fresh.handshakes.update({101: 5, 429: 6})
    fresh.closes.update({1000: 7, 1008: 8})
    monkeypatch.setattr(metrics, "counters", fresh)
    monkeypatch.setattr(rate_limit_counters, "closes", 9)
    monkeypatch.setattr(owner_connections, "refusals", 10)
    monkeypatch.setattr(blocking, "counters", blocking.BlockedLoopCounters(events=11, seconds=1.5))
    hubs = {
        "a": SimpleNamespace(deliveries=12, reconnects=1, overflows=2, replayed=3, gaps=4),
        "b": SimpleNamespace(deliveries=8, reconnects=1, overflows=0),  # no replayed/gaps yet: 0
    }
    hub_module = SimpleNamespace(hubs=lambda: list(hubs.values()))
    monkeypatch.setitem(sys.modules, metrics.HUB_MODULE, hub_module)
    found = metrics.totals()
    assert found == {
        ("django_websocket_messages_received_total", ""): 1,
        ("django_websocket_messages_sent_total", ""): 2,
        ("django_websocket_received_bytes_total", ""): 3,
        ("django_websocket_sent_bytes_total", ""): 4,
        ("django_websocket_handshakes_total", "101"): 5,
        ("django_websocket_handshakes_total", "429"): 6,
        ("django_websocket_closes_total", "1000"): 7,
        ("django_websocket_closes_total", "1008"): 8,
        ("django_websocket_rate_limit_closes_total", ""): 9,
        ("django_websocket_per_user_refusals_total", ""): 10,
        ("django_websocket_blocked_loop_events_total", ""): 11,
        ("django_websocket_blocked_loop_seconds_total", ""): 1.5,
        ("django_websocket_channel_deliveries_total", ""): 20,
        ("django_websocket_broker_reconnects_total", ""): 2,
        ("django_websocket_slow_consumer_closes_total", ""): 2,
        ("django_websocket_resume_replayed_total", ""): 3,
        ("django_websocket_resume_gaps_total", ""): 4,
    }
    assert {name for name, _ in found} == {name for name, _, _ in metrics.COUNTERS}


def test_no_hub_module_means_no_hub_and_none_is_made(monkeypatch):
    """Without the hub module imported, totals() finds no hub and imports nothing to make one."""
    monkeypatch.delitem(sys.modules, metrics.HUB_MODULE, raising=False)
    assert metrics.existing_hubs() == []
    assert metrics.totals()["django_websocket_channel_deliveries_total", ""] == 0
    assert metrics.HUB_MODULE not in sys.modules


def test_view_serves_every_metric_after_a_sync(db):
    """GET /metrics (test_project's URLconf): the text format with every name, this process's totals."""
    with WebSocketClient().connect("/echo/") as websocket:
        websocket.send("counted")
        assert websocket.receive() == "counted"
    response = metrics.metrics_view(RequestFactory().get("/metrics"))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    for name in metrics.METRIC_NAMES:
        assert f"# TYPE {name} " in text, name
    families = {family.name: family for family in prometheus_parser.text_string_to_metric_families(text)}
    sent = families["django_websocket_messages_sent"].samples[0].value
    assert sent >= 1
    assert families["django_websocket_handshake_duration_seconds"].type == "histogram"
    assert metrics.metrics_view(RequestFactory().post("/metrics")).status_code == 405


def test_urlconf_serves_it_at_slash_metrics(client, db):
    """test_project routes the view at /metrics."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert b"django_websocket_connections " in response.content


def test_missing_prometheus_client_is_a_clear_error(monkeypatch):
    """Without prometheus_client: ImproperlyConfigured naming the extra; start_worker does nothing."""
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    assert not metrics.available()
    with pytest.raises(ImproperlyConfigured, match=r"django-websocket-views\[metrics\]"):
        metrics.metrics_view(RequestFactory().get("/metrics"))
    assert metrics.start_worker(2) is False


def test_prometheus_imported_before_the_directory_was_set_is_refused(monkeypatch, tmp_path):
    """PROMETHEUS_MULTIPROC_DIR set after prometheus_client chose its in-memory values: refused."""
    monkeypatch.setenv(metrics.MULTIPROC_ENV, str(tmp_path))
    with pytest.raises(ImproperlyConfigured, match="imported before"):
        metrics.import_prometheus()


def test_importing_the_package_and_module_has_no_side_effects():
    """Importing django_websocket.metrics imports neither prometheus_client, Django nor gevent."""
    code = (
        "import sys, django_websocket.metrics, django_websocket.counters;"
        "print(sorted(m for m in ('prometheus_client', 'django', 'gevent') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


# ---------------------------------------------------------------- multiprocess files


def touch(directory, *names: str) -> None:
    for name in names:
        (directory / name).write_bytes(b"")


def dead_pid() -> int:
    """A pid that no process has (a child that already exited and was reaped)."""
    code = "import os; print(os.getpid())"
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout)


def test_remove_dead_gauges_keeps_live_processes_and_counters(tmp_path):
    """Live-gauge files of dead pids go; the live ones and every counter file stay."""
    dead, alive = dead_pid(), os.getppid()
    touch(
        tmp_path,
        f"gauge_livesum_{dead}.db", f"gauge_livesum_{alive}.db", f"counter_{dead}.db",
        f"histogram_{dead}.db", "gauge_livesum_notapid.db",
    )  # fmt: skip
    assert metrics.remove_dead_gauges(str(tmp_path)) == [dead]
    left = {path.name for path in tmp_path.iterdir()}
    assert left == {
        f"gauge_livesum_{alive}.db",
        f"counter_{dead}.db",
        f"histogram_{dead}.db",
        "gauge_livesum_notapid.db",
    }


def test_gunicorn_hooks(monkeypatch, tmp_path):
    """on_starting empties the directory of *.db; child_exit removes the worker's live gauges only."""
    monkeypatch.setenv(metrics.MULTIPROC_ENV, str(tmp_path))
    touch(tmp_path, "counter_1.db", "gauge_livesum_1.db", "notes.txt")
    metrics.gunicorn_on_starting(server=None)
    assert [path.name for path in tmp_path.iterdir()] == ["notes.txt"]
    touch(tmp_path, "counter_7.db", "gauge_livesum_7.db", "gauge_livesum_8.db")
    metrics.gunicorn_child_exit(server=None, worker=SimpleNamespace(pid=7))
    left = sorted(path.name for path in tmp_path.iterdir())
    assert left == ["counter_7.db", "gauge_livesum_8.db", "notes.txt"]


def test_shipped_gunicorn_config_names_the_hooks():
    """test_project/deploy/gunicorn.conf.py sets on_starting and child_exit to ours."""
    namespace: dict = {}
    path = ROOT / "test_project" / "deploy" / "gunicorn.conf.py"
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    assert namespace["on_starting"] is metrics.gunicorn_on_starting
    assert namespace["child_exit"] is metrics.gunicorn_child_exit


# ---------------------------------------------------------------- system checks


def metric_check_ids() -> list[str]:
    return [message.id for message in checks.check_metrics()]


def test_check_missing_prometheus_client_is_e023(monkeypatch):
    """The view routed without prometheus_client: E023."""
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    assert "django_websocket.E023" in metric_check_ids()


def test_check_multiproc_dir_must_be_a_writable_directory(monkeypatch, tmp_path):
    """PROMETHEUS_MULTIPROC_DIR naming no directory: E024; an existing one passes."""
    monkeypatch.setenv(metrics.MULTIPROC_ENV, str(tmp_path / "missing"))
    assert "django_websocket.E024" in metric_check_ids()
    monkeypatch.setenv(metrics.MULTIPROC_ENV, str(tmp_path))
    assert metric_check_ids() == []


def test_deploy_check_warns_without_multiproc_dir(monkeypatch):
    """manage.py check --deploy: the view routed without PROMETHEUS_MULTIPROC_DIR is W006."""
    monkeypatch.delenv(metrics.MULTIPROC_ENV, raising=False)
    assert [message.id for message in checks.check_metrics_deploy()] == ["django_websocket.W006"]
    ids = [message.id for message in run_checks(include_deployment_checks=True, tags=[checks.TAG])]
    assert "django_websocket.W006" in ids


@override_settings(ROOT_URLCONF="tests.websocket_urls")
def test_checks_are_silent_when_the_view_is_not_routed(monkeypatch):
    """A project without the metrics view gets none of these messages."""
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    monkeypatch.delenv(metrics.MULTIPROC_ENV, raising=False)
    assert checks.check_metrics() == [] and checks.check_metrics_deploy() == []


# ---------------------------------------------------------------- the Grafana dashboard

#: A PromQL identifier not followed by "(" (a function) nor inside a label matcher or a "by (…)".
IDENTIFIER = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def exported_sample_names() -> set[str]:
    names = set(metrics.METRIC_NAMES)
    names |= {metrics.HANDSHAKE_DURATION + suffix for suffix in ("_bucket", "_sum", "_count")}
    return names


def test_dashboard_queries_only_exported_metrics():
    """Every panel's expr names only metrics the view exports; the main names all have a panel."""
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    variables = dashboard["templating"]["list"]
    exprs += [variable["definition"] for variable in variables if "definition" in variable]
    assert exprs
    used = {
        token
        for expr in exprs
        for token in IDENTIFIER.findall(re.sub(r"\{[^}]*\}|\[[^\]]*\]|by \([^)]*\)|\"[^\"]*\"", "", expr))
        if token.startswith("django_websocket_")
    }
    assert used <= exported_sample_names(), used - exported_sample_names()
    for name in (
        "django_websocket_connections",
        "django_websocket_handshakes_total",
        "django_websocket_messages_received_total",
        "django_websocket_messages_sent_total",
        "django_websocket_closes_total",
        "django_websocket_channel_deliveries_total",
        "django_websocket_broker_reconnects_total",
        "django_websocket_resume_replayed_total",
        "django_websocket_resume_gaps_total",
        "django_websocket_handshake_duration_seconds_bucket",
    ):
        assert name in used, name


def test_plain_requests_count_only_as_426(db):
    """Without Upgrade: a websocket view's 426 counts as a failed handshake, an HTTP 404 does not."""
    from django_websocket.handler import WebSocketHandler

    handler, before, statuses = WebSocketHandler(), snapshot(), []

    def start_response(status: str, headers: list) -> None:
        statuses.append(status)

    for path in ("/echo/", "/nope/"):
        handler(RequestFactory().get(path).environ, start_response).close()
    assert [status.split()[0] for status in statuses] == ["426", "404"]
    assert gained(before, "handshakes", 426) == 1 and gained(before, "handshakes", 404) == 0


def test_prometheus_client_is_the_metrics_extra_and_pinned():
    """setup.cfg's "metrics" extra requires prometheus_client; requirements.txt pins the tested version."""
    import configparser

    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    assert "prometheus_client" in setup["options.extras_require"]["metrics"]
    from importlib.metadata import version

    pins = (ROOT / "requirements.txt").read_text().splitlines()
    assert f"prometheus_client=={version('prometheus_client')}" in pins


def test_start_worker_with_a_broken_setup_logs_and_serves_on(monkeypatch, tmp_path, caplog):
    """A metrics setup that fails at worker start is an error in the log, not a worker that cannot boot."""
    monkeypatch.setattr(metrics, "_exporter", None)
    monkeypatch.setattr(metrics, "worker_count", metrics.worker_count)
    monkeypatch.setenv(metrics.MULTIPROC_ENV, str(tmp_path))  # after prometheus_client's import
    with caplog.at_level("ERROR", logger="django_websocket"):
        assert metrics.start_worker(2) is False
    assert "websocket metrics are off in this worker" in caplog.text and "imported before" in caplog.text


def test_every_shipped_nginx_layout_denies_metrics():
    """Each nginx-*.conf with a proxied "location /" denies "location = /metrics" before it."""
    for path in sorted((ROOT / "test_project" / "deploy").glob("nginx-*.conf")):
        text = path.read_text()
        if "\n    location / {" not in text:
            continue
        denied = text.find("    location = /metrics {\n        deny all;\n    }")
        assert 0 < denied < text.index("\n    location / {"), path.name
