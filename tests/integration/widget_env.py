"""Shared harness of the widget's end-to-end tests (stdlib only).

WidgetEnv starts what the widget channel needs, for real: a throwaway
PostgreSQL cluster (tests/lib/pg_cluster.sh) with the schema migrated by
`missedcalld --migrate` and a small CRM (statuses, types, employees, a
client whose phone is stored in a human format), the daemon itself, and
amisim (the fake AMI server) on demand. Every process and directory is
removed by close(), which callers run in `finally`.

SSE is read with a tiny client over http.client (chunked decoding is
http.client's); events come out as dicts {event, id, data, raw}.
"""
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

SRC = os.environ.get("MCD_SOURCE_ROOT",
                     os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
PG_CLUSTER = os.path.join(SRC, "tests", "lib", "pg_cluster.sh")
CLIENT_PHONE_STORED = "8 (916) 123-45-67"   # as a CRM would keep it
CLIENT_E164 = "+79161234567"                 # the caller of tests/data/ami/*.ami
CLIENT_NAME = "Петров Пётр"
AMI_USER, AMI_SECRET = "mcd", "widget-e2e-secret"


class TestFailure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise TestFailure(msg)
    print("ok:", msg, flush=True)


from mcdtest import free_port  # noqa: E402  (re-exported to the widget tests)


def id_key(event_id):
    """Ids are "<seq>-<outbox>", ordered numerically on (seq, outbox)."""
    seq, outbox = event_id.split("-")
    return (int(seq), int(outbox))


class SSE:
    """One GET /v1/events stream."""

    def __init__(self, port, token=None, last_event_id=None, headers=None, timeout=20):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        h = dict(headers or {})
        if token:
            h["Authorization"] = "Bearer " + token
        if last_event_id:
            h["Last-Event-ID"] = last_event_id
        h["Accept"] = "text/event-stream"
        self.conn.request("GET", "/v1/events", headers=h)
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.comments = 0
        self.retry = None

    def next(self, deadline=20.0):
        """The next event (dict), or None when the stream ended."""
        ev = {"event": "message", "id": None, "data": ""}
        data = []
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            line = self.resp.readline()
            if not line:
                return None
            line = line.decode("utf-8").rstrip("\r\n")
            if line == "":
                if data or ev["event"] != "message":
                    ev["data"] = json.loads("\n".join(data)) if data else None
                    return ev
                continue
            if line.startswith(":"):
                self.comments += 1
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "data":
                data.append(value)
            elif field == "event":
                ev["event"] = value
            elif field == "id":
                ev["id"] = value
            elif field == "retry":
                self.retry = int(value)
        raise TestFailure("no event within %.0f s" % deadline)

    def until(self, name, deadline=30.0):
        """Events up to and including the first one called `name`."""
        got = []
        end = time.monotonic() + deadline
        while True:
            ev = self.next(max(0.1, end - time.monotonic()))
            if ev is None:
                raise TestFailure("stream ended before %s (got %s)" % (name, [e["event"] for e in got]))
            got.append(ev)
            if ev["event"] == name:
                return got

    def close(self):
        try:
            self.conn.close()
        except OSError:
            pass


def http_get(port, path, token=None, headers=None, timeout=10):
    """(status, headers dict, body bytes) of one GET."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    h = dict(headers or {})
    if token:
        h["Authorization"] = "Bearer " + token
    c.request("GET", path, headers=h)
    r = c.getresponse()
    body = r.read()
    hdrs = {k.lower(): v for k, v in r.getheaders()}
    c.close()
    return r.status, hdrs, body


class WidgetEnv:
    def __init__(self, missedcalld, amisim, name="widget", widget_extra=""):
        self.missedcalld = missedcalld
        self.amisim_bin = amisim
        self.tmp = tempfile.mkdtemp(prefix=name + ".")
        self.pgdir = tempfile.mkdtemp(prefix=name + "-pg.")
        self.procs = []
        self.daemon = None
        self.amisim = None
        self.pg = {}
        self.widget_port = free_port()
        self.ami_port = free_port()
        self.widget_extra = widget_extra
        self.log_path = os.path.join(self.tmp, "daemon.log")

    # ---- PostgreSQL ----------------------------------------------------------
    def start_db(self):
        out = subprocess.run(["bash", PG_CLUSTER, "start", self.pgdir], check=True,
                             capture_output=True, text=True).stdout
        for line in out.splitlines():
            line = line.strip()
            if line.startswith("export "):
                line = line[len("export "):]
            k, _, v = line.partition("=")
            if k.startswith("PG_"):
                self.pg[k] = v.strip("'\"")
        if "PG_CONNINFO" not in self.pg:
            raise TestFailure("pg_cluster.sh printed no PG_CONNINFO: %r" % out)

    def psql(self, sql):
        return subprocess.run(["bash", PG_CLUSTER, "psql", self.pgdir, "-qAt", "-c", sql],
                              check=True, capture_output=True, text=True).stdout.strip()

    def seed(self):
        self.psql(
            "INSERT INTO appeal_statuses (name) VALUES ('Новое');"
            "INSERT INTO appeal_statuses (name, is_closed) VALUES ('Закрыто', true);"
            "INSERT INTO appeal_types (name, initial_status_id) VALUES ('Пропущенный звонок',"
            " (SELECT id FROM appeal_statuses WHERE name = 'Новое'));"
            "INSERT INTO employees (login, name) VALUES ('ivanov', 'Иван Иванов'),"
            " ('petrova', 'Мария Петрова');"
            "INSERT INTO clients (name) VALUES ('%s');"
            "INSERT INTO client_phones (client_id, phone, phone_e164) VALUES"
            " ((SELECT id FROM clients WHERE name = '%s'), '%s', '%s');"
            % (CLIENT_NAME, CLIENT_NAME, CLIENT_PHONE_STORED, CLIENT_E164))

    # ---- configuration and the daemon -------------------------------------------
    def write_config(self):
        # sla_minutes: a year, so the replayed 2026-06 calls are not overdue
        # at once (the overdue sweep would add events the tests do not expect).
        os.makedirs(os.path.join(self.tmp, "state"), exist_ok=True)
        with open(os.path.join(self.tmp, "ami.secret"), "w") as f:
            f.write(AMI_SECRET + "\n")
        self.conf = os.path.join(self.tmp, "mcd.conf")
        with open(self.conf, "w") as f:
            f.write("""
daemon = { state_dir = "%(tmp)s/state"; log_level = "debug"; };
database = { conninfo = "%(conninfo)s"; reconnect_max = 1; connect_timeout = 2; fsync = "never"; };
pbx = ( { name = "office"; type = "ami"; host = "127.0.0.1"; port = %(ami)d;
          username = "%(user)s"; secret_file = "%(tmp)s/ami.secret";
          trunks = [ "PJSIP/provider" ]; inbound_contexts = [ "from-pstn" ]; } );
calls = { decide_grace_ms = 300; };
missed_calls = { appeal_type = "Пропущенный звонок"; manager = "ivanov"; sla_minutes = 525600; };
widget = { listen = "127.0.0.1:%(port)d"; static_dir = "%(static)s";
           heartbeat_seconds = 1; token_cache_seconds = 2; %(extra)s };
""" % {"tmp": self.tmp, "conninfo": self.pg["PG_CONNINFO"], "ami": self.ami_port,
       "user": AMI_USER, "port": self.widget_port,
       "static": os.path.join(SRC, "appeals", "widget"), "extra": self.widget_extra})

    def cli(self, *args, check_rc=True):
        r = subprocess.run([self.missedcalld, "-c", self.conf, *args], capture_output=True,
                           text=True, timeout=60)
        if check_rc and r.returncode != 0:
            raise TestFailure("missedcalld %s: rc %d: %s" % (" ".join(args), r.returncode, r.stderr))
        return r

    def setup(self):
        self.start_db()
        self.write_config()
        self.cli("--migrate")
        self.seed()

    def start_daemon(self):
        log = open(self.log_path, "a")
        self.daemon = subprocess.Popen([self.missedcalld, "-c", self.conf], stdout=log,
                                       stderr=subprocess.STDOUT)
        self.procs.append(self.daemon)
        end = time.monotonic() + 20
        while time.monotonic() < end:
            if self.daemon.poll() is not None:
                raise TestFailure("daemon exited: rc %s\n%s" % (self.daemon.returncode, self.log()))
            try:
                status, _, _ = http_get(self.widget_port, "/healthz", timeout=2)
                return status
            except OSError:
                time.sleep(0.05)
        raise TestFailure("the widget server never answered\n" + self.log())

    def stop_daemon(self):
        if self.daemon and self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGTERM)
            try:
                self.daemon.wait(20)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait()
        rc = self.daemon.returncode if self.daemon else None
        self.daemon = None
        return rc

    def wait_ready(self, deadline=30):
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            status, _, body = http_get(self.widget_port, "/healthz")
            if status == 200:
                return json.loads(body)
            time.sleep(0.1)
        raise TestFailure("never ready: %s\n%s" % (body, self.log()[-3000:]))

    def wait_db_ready(self, deadline=30):
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            _, _, body = http_get(self.widget_port, "/healthz")
            if json.loads(body)["database"]["state"] == "ready":
                return
            time.sleep(0.1)
        raise TestFailure("database never ready\n" + self.log()[-3000:])

    def log(self):
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    # ---- amisim -------------------------------------------------------------
    def start_amisim(self, *args):
        self.amisim = subprocess.Popen([self.amisim_bin, "-p", str(self.ami_port), "-u", AMI_USER,
                                        "-s", AMI_SECRET, "--linger", "-1", *args],
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs.append(self.amisim)
        return self.amisim

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        subprocess.call(["bash", PG_CLUSTER, "stop", self.pgdir])
        if os.environ.get("WIDGET_TEST_KEEP"):
            print("kept", self.tmp, file=sys.stderr)
        else:
            subprocess.call(["rm", "-rf", self.tmp])
