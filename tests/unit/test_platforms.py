"""What a host is, from its probe: the OS family check, the pips that will run there (which
decide the credential helper's netrc), and uv's wheel for a host without pip."""
from __future__ import annotations

import pytest

from tests.files import plugin

pytestmark = pytest.mark.unit
platforms = plugin("plugin_utils.platforms")
helper_plan = plugin("plugin_utils.helper_plan")
uv = plugin("plugin_utils.uv_binary")

DEBIAN12 = {"id": "debian", "version_id": "12", "pretty_name": "Debian GNU/Linux 12 (bookworm)"}
UBUNTU = {"id": "ubuntu", "id_like": "debian", "pretty_name": "Ubuntu 24.04.1 LTS"}
MINT = {"id": "linuxmint", "id_like": "ubuntu debian", "pretty_name": "Linux Mint 22"}
ROCKY = {"id": "rocky", "id_like": "rhel centos fedora", "pretty_name": "Rocky Linux 9.4"}


@pytest.mark.parametrize("os_state", [DEBIAN12, UBUNTU, MINT])
def test_the_debian_family_is_supported(os_state):
    assert platforms.os_problem(os_state) == ""


@pytest.mark.parametrize("os_state, named", [(ROCKY, "Rocky Linux 9.4 (ID=rocky, ID_LIKE=rhel"),
                                             ({}, "an OS without /etc/os-release")])
def test_another_family_is_refused_by_name_with_what_is_supported(os_state, named):
    said = platforms.os_problem(os_state, "vm-1")
    assert said.startswith(f"vm-1 runs {named}")
    assert "Debian 11, 12 and 13" in said and "Ubuntu" in said


NOPIP = {"pip": "", "venv": True, "ensurepip": "23.0.1", "wheels": ["23.0.1"]}
BARE = {"pip": "", "venv": False, "ensurepip": "", "wheels": []}
TRIXIE = {"pip": "25.1.1", "venv": True, "ensurepip": "25.1.1", "wheels": ["25.1.1"]}


def test_the_pips_of_a_host_are_its_own_its_venvs_and_the_distros_wheel():
    assert platforms.pips(NOPIP) == [("23.0.1", "venv"), ("23.0.1", "wheel")]
    assert platforms.oldest_pip([TRIXIE, {"pip": "20.3.4"}]) == "20.3.4"
    assert platforms.oldest_pip([BARE]) == ""
    assert platforms.pip_summary(NOPIP, "python3") == "no pip for python3, venvs get pip 23.0.1"
    assert platforms.pip_summary(BARE, "python3") == \
        "no pip for python3, no venv module (python3-venv)"
    assert platforms.no_pip_can_use(BARE, uv=False)
    assert not platforms.no_pip_can_use(BARE, uv=True)
    assert not platforms.no_pip_can_use(NOPIP, uv=False)


@pytest.mark.parametrize("pythons, netrc", [
    ({"python3": TRIXIE}, False),                       # pip 25 everywhere: the helper only
    ({"python3": NOPIP}, True),                         # venvs get pip 23.0: netrc too
    ({"python3": BARE}, True),                          # no pip known: both ways
    ({"python3": TRIXIE, "/opt/app/venv/bin/python": {"pip": "22.3"}}, True),  # an old venv
])
def test_netrc_covers_every_pip_that_will_run_on_the_host(pythons, netrc):
    assert helper_plan.netrc_wanted("auto", {"pythons": pythons}) is netrc
    assert helper_plan.netrc_wanted("never", {"pythons": pythons}) is False


FILES = [{"filename": name, "url": f"https://feed/{name}", "sha256": "0" * 64} for name in (
    "uv-0.13.9-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    "uv-0.13.9-py3-none-manylinux_2_28_aarch64.whl",
    "uv-0.13.9-py3-none-musllinux_1_1_x86_64.whl",
    "uv-0.13.9-py3-none-manylinux_2_31_x86_64.whl",
    "uv-0.13.8-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    "uv-0.13.9.tar.gz")]


def test_uv_takes_the_highest_glibc_the_host_meets_of_the_pinned_version():
    glibc = lambda v, m="x86_64": {"libc": "glibc", "libc_version": v, "machine": m}  # noqa: E731
    assert uv.choose(FILES, "0.13.9", glibc("2.36"))["filename"].endswith("manylinux_2_31_x86_64.whl")
    assert "manylinux2014" in uv.choose(FILES, "0.13.9", glibc("2.28"))["filename"]
    assert uv.choose(FILES, "0.13.9", glibc("2.36", "aarch64"))["filename"].endswith("2_28_aarch64.whl")
    assert "musllinux" in uv.choose(FILES, "0.13.9", {"libc": "musl", "libc_version": "1.2",
                                                      "machine": "x86_64"})["filename"]
    with pytest.raises(uv.UvError, match="no wheel of uv 0.13.9 for glibc2.12-x86_64"):
        uv.choose(FILES, "0.13.9", glibc("2.12"))


def test_uv_is_fetched_with_the_token_for_the_feed_only_and_checked_and_cached(tmp_path):
    """A feed that answers each download with a redirect to another host (as Azure Artifacts
    sends files to its blob storage): the token goes to the feed's index and download URL, never
    to the other host; the wheel's SHA-256 is checked; a second fetch needs no network."""
    import hashlib
    import http.server
    import io
    import threading
    import zipfile

    wheel_name = "uv-0.13.9-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as wheel:
        wheel.writestr("uv-0.13.9.data/scripts/uv", b"#!uv binary\n")
        wheel.writestr("uv-0.13.9.data/scripts/uvx", b"#!uvx binary\n")
    blob = buffer.getvalue()
    seen = []

    class Feed(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server interface
            host = self.headers["Host"]
            seen.append((host.split(":")[0], self.path, self.headers.get("Authorization")))
            port = self.server.server_port
            if self.path == "/simple/uv/":
                body = (f'<a href="/files/{wheel_name}#sha256='
                        f'{hashlib.sha256(blob).hexdigest()}">{wheel_name}</a>').encode()
                self.send_response(200)
                self.end_headers()
                self.wfile.write(body)
            elif self.path.startswith("/files/"):
                self.send_response(303)
                self.send_header("Location", f"http://localhost:{port}/blob/{wheel_name}?sig=1")
                self.end_headers()
            else:
                self.send_response(200)
                self.end_headers()
                self.wfile.write(blob)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Feed)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    spec = {"version": "0.13.9", "index_url": f"http://127.0.0.1:{server.server_port}/simple/",
            "platforms": [{"libc": "glibc", "libc_version": "2.36", "machine": "x86_64"}],
            "cache_dir": str(tmp_path), "username": "pipfeed"}
    try:
        answer = uv.fetch(spec, "s3cret-pat")["glibc2.36-x86_64"]
        again = uv.fetch(dict(spec, index_url="http://127.0.0.1:9/simple/"), "s3cret-pat")
    finally:
        server.shutdown()
    assert answer["wheel"] == wheel_name
    with open(answer["programs"]["uv"]["path"], "rb") as handle:
        assert handle.read() == b"#!uv binary\n"
    assert again["glibc2.36-x86_64"] == answer  # from the cache: port 9 was never asked
    by_host = {(host, auth is not None) for host, _, auth in seen}
    assert ("127.0.0.1", True) in by_host and ("localhost", False) in by_host
    assert ("localhost", True) not in by_host
