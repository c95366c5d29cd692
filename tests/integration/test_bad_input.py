"""Bad input: every case runs site.yml and must fail before any host changes, with a message
that names the variable (or the file) and the fix.

"Before any host changes" is proved by a snapshot of everything the roles manage on the host
(/etc/pip.conf and its backups, /etc/uv, /etc/pipfeed, the wheelhouse, the helper and its
links, the pipfeed group), taken before and after the run and compared.

Cases that differ only in variables share one run: each is a host alias of its own (an
inventory host with its own variables on one of the lab's hosts), all fresh, as the lab made
them. Cases that need a host in a certain state (pip missing, a read-only /etc, a hand-written
pip.conf) or that act on the whole play (the requirement set, the feed down, a wheel's hash)
have runs of their own, limited to one host.
"""
from __future__ import annotations

import json
import secrets
import subprocess

import pytest

from tests.integration.reliability import (alias_inventory, clean, failure_messages, in_host,
                                           snapshot)
from tests.integration.support import (BIN, ROOT, ansible_env, must, recap, run_playbooks,
                                       sudo)

pytestmark = pytest.mark.integration
RELIABILITY = "Bad input"
HOSTS = ["deb11-1", "deb12-1", "deb13-1"]
SITE = ["site.yml"]
# A secret that must not come out of any failing run.
SECRET = "labsecret" + secrets.token_hex(12)
NOREAD = "labpat-writeonly-" + secrets.token_hex(12)


def feed(lab, **changes) -> list[dict]:
    entry = {"name": "python-feed", "url": lab.feed_url, "token_var": "lab_feed_token"}
    entry.update(changes)
    return [{k: v for k, v in entry.items() if v is not None}]


def variable_cases(lab) -> dict[str, tuple[str, dict, list[str]]]:
    """{case id: (what it is, host vars, what the message must say)}."""
    url = lab.feed_url
    return {
        "url-without-scheme": (
            "a feed URL without https://", {"pipfeed_feeds": feed(lab, url=url.split("://")[1])},
            ["pipfeed_feeds[0] (python-feed)", "must be an absolute https URL"]),
        "url-http": (
            "a plain http feed URL", {"pipfeed_feeds": feed(lab, url=url.replace("https", "http"))},
            ["pipfeed_feeds[0] (python-feed)", "plain http", "Use https, or set insecure_http: true"]),
        "url-with-credentials": (
            "credentials inside the feed URL",
            {"pipfeed_feeds": feed(lab, url=url.replace("https://", f"https://me:{SECRET}@"))},
            ["pipfeed_feeds[0] (python-feed)", "carries credentials. Remove them", "token_var"]),
        "url-unknown-host": (
            "a feed host name that does not resolve (DNS failure)",
            {"pipfeed_feeds": feed(lab, url=url.replace("feed.lab.test", "feed.nowhere.lab.test"))},
            ["cannot ask feed python-feed", "Check the URL, DNS"]),
        "azure-incomplete": (
            "an Azure feed without its feed name",
            {"pipfeed_feeds": feed(lab, url=None, azure={"organization": "contoso"})},
            # Argument validation (pipfeed_common's argument_specs) answers first.
            ["missing required arguments: feed found in pipfeed_feeds -> azure"]),
        "feed-names-twice": (
            "two feeds with the same name",
            {"pipfeed_feeds": feed(lab) + feed(lab, url=lab.other_url)},
            ["pipfeed_feeds has two feeds named the same (python-feed, items 0 and 1)",
             "give each a name of its own"]),
        "token-empty": (
            "an empty token", {"pipfeed_feeds": feed(lab, token_var="case_token"), "case_token": ""},
            ["The token of feed python-feed, from the variable case_token (token_var), is empty",
             "Set it to the personal access token alone"]),
        "token-newline": (
            "a token with a newline in it",
            {"pipfeed_feeds": feed(lab, token_var="case_token"), "case_token": "labpat\n" + SECRET},
            ["the variable case_token (token_var), holds a line break",
             "Set it to the personal access token alone"]),
        "token-spaces": (
            "a token with surrounding spaces",
            {"pipfeed_feeds": feed(lab, token_var="case_token"), "case_token": f"  {SECRET} "},
            ["the variable case_token (token_var), holds whitespace",
             "Set it to the personal access token alone"]),
        "token-wrong-401": (
            "a wrong token (the feed answers 401)",
            {"pipfeed_feeds": feed(lab, token_var="case_token"), "case_token": SECRET},
            ["answered 401 (token not accepted) to the token from the variable case_token (token_var)",
             "Give it a valid personal access token"]),
        "token-without-read-403": (
            "a token without the read scope (the feed answers 403)",
            {"pipfeed_feeds": feed(lab, token_var="case_token"), "case_token": NOREAD},
            ["answered 403 (token accepted but not allowed to read the feed)",
             "the variable case_token (token_var)", "scope Packaging (Read)"]),
        "token-no-source": (
            "a feed that names no token source",
            {"pipfeed_feeds": feed(lab, token_var=None)},
            ["Feed python-feed must name exactly one token source (token_var, token_env or "
             "token_file); it names none"]),
        "token-var-undefined": (
            "a token_var that names no variable",
            {"pipfeed_feeds": feed(lab, token_var="case_token_nowhere")},
            ["The token of feed python-feed, from the variable case_token_nowhere (token_var), is "
             "not defined", "Define case_token_nowhere in the inventory"]),
        "token-macro": (
            "an Azure DevOps macro that the pipeline never expanded, $(FEED_TOKEN)",
            {"pipfeed_feeds": feed(lab, token_var="case_token"), "case_token": "$(FEED_TOKEN)"},
            ["the variable case_token (token_var), is an Azure DevOps macro that was never "
             "expanded", "or it is secret and was not mapped into the step's env"]),
        "old-variable-name": (
            "a variable of the names before 1.0.0 (pip_config_mode)",
            {"pip_config_mode": "primary"},
            ["pip_config_mode is set, but this collection reads pipfeed_mode instead",
             "rename it in the inventory"]),
        "token-file-missing": (
            "a token_file that is not on the controller",
            {"pipfeed_feeds": feed(lab, token_var=None, token_file="/nonexistent/feed.token")},
            ["takes its token from token_file /nonexistent/feed.token, which is not a file on the "
             "controller", "Write the token there"]),
        "token-env-unset": (
            "a token_env that is not exported",
            {"pipfeed_feeds": feed(lab, token_var=None, token_env="PIPFEED_CASE_UNSET_TOKEN")},
            ["the controller environment variable PIPFEED_CASE_UNSET_TOKEN (token_env), is not set",
             "must be exported where ansible-playbook runs"]),
        "token-in-settings": (
            "the token written into a pip.conf setting",
            {"pipfeed_config_extra_settings": {"global": {"user-agent": "{{ lab_feed_token }}"}}},
            ["A feed's token appears in the pipfeed_config settings",
             "belongs to the credential helper"]),
        "mode-unknown": (
            "an unknown pipfeed_mode", {"pipfeed_mode": "mirror"},
            ["value of pipfeed_mode must be one of: extra, primary, offline, got: mirror"]),
        "wheelhouse-path-relative": (
            "a relative wheelhouse path", {"pipfeed_wheelhouse_path": "var/lib/pipfeed/wheelhouse"},
            ["pipfeed_wheelhouse_path is 'var/lib/pipfeed/wheelhouse'; it must be an absolute path",
             "Set pipfeed_wheelhouse_path to an absolute path"]),
        "venv-path-relative": (
            "a relative virtual environment path",
            {"pipfeed_wheelhouse_venvs": [{"path": "opt/app/venv"}]},
            ["pipfeed_wheelhouse_venvs a mapping with an absolute path"]),
        "stream-max-negative": (
            "a negative pipfeed_wheelhouse_stream_max_bytes", {"pipfeed_wheelhouse_stream_max_bytes": -1},
            ["pipfeed_wheelhouse_min_free_bytes and pipfeed_wheelhouse_stream_max_bytes numbers of bytes "
             "(0 or more)"]),
        "index-feed-unknown": (
            "a wheelhouse index feed that no feed is named",
            {"pipfeed_wheelhouse_index_feed": "nosuchfeed"},
            ["pipfeed_wheelhouse_index_feed is 'nosuchfeed', which no feed of pipfeed_feeds",
             "Name one of"]),
        "proxy-with-credentials": (
            "a proxy URL with credentials", {"pipfeed_config_proxy": f"http://me:{SECRET}@proxy.lab.test:3128"},
            ["pipfeed_config_proxy must be a proxy URL without credentials"]),
        "cert-missing": (
            "a CA bundle that is not on the host", {"pipfeed_config_cert": "/etc/ssl/no-such-bundle.pem"},
            ["pipfeed_config_cert is /etc/ssl/no-such-bundle.pem, which is not a file",
             "Put the CA bundle there first"]),
        "user-missing": (
            "a helper user that does not exist", {"pipfeed_credential_helper_users": ["nosuchuser"]},
            ["pipfeed_credential_helper_users names nosuchuser, which does not exist",
             "create them first, or remove them from the list"]),
        "wheelhouse-python-missing": (
            "a pipfeed_wheelhouse_python that the host lacks",
            {"pipfeed_wheelhouse_python": "/usr/bin/python2"},
            ["/usr/bin/python2 could not read the wheelhouse on",
             "point pipfeed_wheelhouse_python at it"]),
        "python-unsupported": (
            "an unsupported Python (pipfeed_config_python: python2, which the host lacks)",
            {"pipfeed_config_python": "python2"},
            ["pipfeed_config_python is python2, which does not run on",
             "point pipfeed_config_python at the host's Python"]),
        # The two that follow land on deb12-1 and deb13-1 (case index modulo 3).
        "identity-old-pip": (
            "a managed-identity feed on a host whose pip (23.0, Debian 12) cannot ask the helper",
            {"pipfeed_feeds": feed(lab, azure_identity={})},
            ["feeds python-feed take their token from the VM's managed identity, which only pip "
             "23.1 and later and uv ask for", "Give the host pip 23.1 or later"]),
        "identity-imds-unreachable": (
            "a managed-identity feed on a host that is no Azure VM (IMDS unreachable)",
            {"pipfeed_feeds": feed(lab, azure_identity={}),
             "pipfeed_credential_helper_check_timeout": 5},
            ["no token for feed python-feed from the VM's managed identity",
             "this host is not an Azure VM with a managed identity, or cannot reach IMDS"]),
    }


def check_case(request, result, messages: dict, host: str, expected: list[str],
               before: dict, after: dict, secrets_: tuple = (SECRET, NOREAD)) -> None:
    """The case failed on its host before changing anything, said what it must, leaked nothing."""
    request.node.user_properties.append(("detail", ""))
    stats = recap(result.stdout).get(host)
    assert stats is not None, result.stdout[-3000:] + result.stderr[-2000:]
    assert stats["failed"] + stats["unreachable"] >= 1, f"{host} did not fail: {stats}"
    assert stats["changed"] == 0, f"{host} changed something: {stats}"
    said = messages.get(host, "")
    for text in expected:
        assert text in said, f"{host}: {text!r} not in the message: {said[:1500]}"
    for secret in secrets_:
        assert secret not in result.stdout + result.stderr
    assert after == before
    # The message that the summary shows: the sentence that names the fix.
    request.node.user_properties[-1] = ("detail", _excerpt(said, expected[-1]))


def _excerpt(said: str, anchor: str) -> str:
    start = max(said.find(anchor) - 60, 0)
    return "..." + said[start:start + 170] + "..."


# ----- the shared run ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("bad_input")


@pytest.fixture(scope="module")
def fresh(lab):
    """The hosts as the lab made them, before and after this module; the lab's tokens back."""
    tokens = lab.tokens_file.read_text()
    data = json.loads(tokens)
    data["tokens"].append({"token": NOREAD, "scopes": ["write"]})
    lab.tokens_file.write_text(json.dumps(data, indent=2))
    for host in HOSTS:
        clean(lab, host)
    yield
    lab.tokens_file.write_text(tokens)
    for host in HOSTS:
        clean(lab, host)


@pytest.fixture(scope="module")
def batch(lab, workdir, fresh):
    cases = variable_cases(lab)
    aliases = {case: (HOSTS[index % len(HOSTS)], variables)
               for index, (case, (_, variables, _)) in enumerate(cases.items())}
    inventory = alias_inventory(lab, workdir / "aliases.json", aliases)
    before = {host: snapshot(lab, host) for host in HOSTS}
    result = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(inventory),
                             str(ROOT / "site.yml")], cwd=ROOT, env=ansible_env(PIPFEED_CASE_UNSET_TOKEN=None),
                            capture_output=True, text=True, timeout=900)
    after = {host: snapshot(lab, host) for host in HOSTS}
    return {"cases": cases, "aliases": aliases, "result": result, "before": before,
            "after": after, "messages": failure_messages(result.stdout)}


def _case_ids() -> list[str]:
    """The case ids, at collection time (before any lab is up)."""
    class Stub:
        feed_url = "https://feed.lab.test/x/simple/"
        other_url = "https://other.lab.test:8443/simple/"
    return list(variable_cases(Stub()))


@pytest.mark.parametrize("case", _case_ids())
def test_bad_setting_fails_before_any_host_changes(request, lab, batch, case):
    what, _, expected = batch["cases"][case]
    request.node.user_properties.append(("case", f"{what} (`{case}`)"))
    real = batch["aliases"][case][0]
    check_case(request, batch["result"], batch["messages"], case, expected,
               batch["before"][real], batch["after"][real])


# ----- host states --------------------------------------------------------------------------

HAND_WRITTEN = ("[global]\n"
                "extra-index-url = https://me:{secret}@feed.lab.test/contoso/_packaging/"
                "python-feed/pypi/simple/\ntimeout = 30\n")
UNPARSEABLE = "index-url = https://feed.lab.test/contoso/_packaging/python-feed/pypi/simple/\n"
# What a RHEL-family host says of itself; bind-mounted over the host's own in its mount
# namespace (the roles read /etc/os-release).
ROCKY = ('NAME="Rocky Linux"\nVERSION_ID="9.4"\nID="rocky"\nID_LIKE="rhel centos fedora"\n'
         'PRETTY_NAME="Rocky Linux 9.4 (Blue Onyx)"\n')


def read_only_etc(lab, host: str, on: bool) -> None:
    """/etc read-only for every process of the host: a read-only bind mount of /etc over
    itself, made in the host's mount namespace from this machine (see in_host)."""
    in_host(lab, host, "mount --rbind /etc /etc && mount -o remount,bind,ro /etc" if on
            else "umount -R /etc")


@pytest.fixture(scope="module")
def host_states(lab, workdir, fresh):
    """One run on three prepared hosts: an OS of another family (deb11-1 says it is Rocky
    Linux), /etc read-only (deb12-1), a hand-written pip.conf with a token in its URL
    (deb13-1)."""
    in_host(lab, "deb11-1", f"printf '{ROCKY}' > /run/lab-os-release && "
                            "mount --bind /run/lab-os-release /etc/os-release")
    must(lab, "deb13-1", sudo("cat > /etc/pip.conf && chmod 0644 /etc/pip.conf"),
         HAND_WRITTEN.format(secret=SECRET).encode())
    try:
        before = {host: snapshot(lab, host) for host in HOSTS}
        read_only_etc(lab, "deb12-1", True)
        try:
            assert must(lab, "deb12-1", sudo("touch /etc/pipfeed-probe 2>&1 || echo read-only")
                        ).strip().endswith("read-only")
            result = run_playbooks(lab, workdir, SITE, {})
        finally:
            read_only_etc(lab, "deb12-1", False)
        after = {host: snapshot(lab, host) for host in HOSTS}
    finally:
        in_host(lab, "deb11-1", "umount /etc/os-release && rm -f /run/lab-os-release")
        must(lab, "deb13-1", sudo("rm -f /etc/pip.conf"))
    return {"result": result, "before": before, "after": after,
            "messages": failure_messages(result.stdout)}


HOST_CASES = {
    "os-unsupported": ("an OS of another family, Rocky Linux (deb11-1)", "deb11-1",
                       ["deb11-1 runs Rocky Linux 9.4 (Blue Onyx) (ID=rocky, ID_LIKE=rhel centos "
                        "fedora), which these roles do not support",
                        "Leave this host out of the inventory group"]),
    "etc-read-only": ("a read-only /etc (deb12-1)", "deb12-1",
                      ["/etc on deb12-1 is not writable, even for root", "Make it writable"]),
    "pip-conf-with-token": (
        "a hand-written pip.conf with a token in its URL (deb13-1)", "deb13-1",
        ["/etc/pip.conf on deb13-1 (written by hand, or by another tool) carries a password or "
         "token in a URL ([global] extra-index-url)",
         "token_var, token_env or token_file in pipfeed_feeds"]),
}


@pytest.mark.parametrize("case", list(HOST_CASES))
def test_bad_host_state_fails_before_any_host_changes(request, lab, host_states, case):
    what, host, expected = HOST_CASES[case]
    request.node.user_properties.append(("case", f"{what} (`{case}`)"))
    check_case(request, host_states["result"], host_states["messages"], host, expected,
               host_states["before"][host], host_states["after"][host])


def one_run(lab, workdir, host: str, variables: dict, prepare=None, undo=None):
    before = snapshot(lab, host)
    if prepare:
        prepare()
    try:
        result = run_playbooks(lab, workdir, SITE, variables, "--limit", host)
    finally:
        if undo:
            undo()
    return result, before, snapshot(lab, host)


def test_unparseable_hand_written_pip_conf_fails_before_any_host_changes(
        request, lab, workdir, fresh):
    request.node.user_properties.append(
        ("case", "a hand-written pip.conf that pip cannot parse (`pip-conf-unparseable`)"))
    host = "deb13-1"
    must(lab, host, sudo("cat > /etc/pip.conf && chmod 0644 /etc/pip.conf"), UNPARSEABLE.encode())
    try:
        result, before, after = one_run(lab, workdir, host, {})
    finally:
        must(lab, host, sudo("rm -f /etc/pip.conf"))
    check_case(request, result, failure_messages(result.stdout), host,
               ["/etc/pip.conf on deb13-1", "cannot be parsed, so pip cannot read it either",
                "or set pipfeed_config_keep_existing: false"], before, after)


def test_bad_serial_stops_the_run_before_any_host_is_contacted(request, lab, workdir, fresh):
    """A play keyword fails in Ansible's main process, before any task: no host in the recap."""
    request.node.user_properties.append(
        ("case", "a pipfeed_serial Ansible cannot batch by (`serial-unusable`)"))
    request.node.user_properties.append(("detail", ""))
    result, before, after = one_run(lab, workdir, "deb12-1", {"pipfeed_serial": "ten"})
    said = result.stdout + result.stderr
    assert result.returncode != 0, said[-2000:]
    for text in ("pipfeed_serial is 'ten'", "a percentage of the play's hosts ('25%')",
                 "Leave it unset for one batch of every host"):
        assert text in said, f"{text!r} not in: {said[-1500:]}"
    assert recap(result.stdout) == {}, "a host was contacted: " + result.stdout[-1500:]
    assert after == before
    request.node.user_properties[-1] = ("detail", _excerpt(said, "Leave it unset"))


def test_unpinned_requirements_fail_before_any_host_changes(request, lab, workdir, fresh):
    request.node.user_properties.append(
        ("case", "requirements that are not fully pinned (`requirements-unpinned`)"))
    requirements = workdir / "unpinned.txt"
    requirements.write_text("requests>=2.0\n")
    result, before, after = one_run(lab, workdir, "deb12-1",
                                    {"pipfeed_wheelhouse_requirements": str(requirements)})
    check_case(request, result, failure_messages(result.stdout), "deb12-1",
               ["pipfeed_wheelhouse_requirements line 1: 'requests>=2.0' is not pinned",
                "Pin it with '=='"], before, after)


def test_feed_down_fails_before_any_host_changes(request, lab, workdir, fresh):
    request.node.user_properties.append(("case", "the feed down (`feed-down`)"))
    result, before, after = one_run(lab, workdir, "deb11-1",
                                    {"pipfeed_credential_helper_check_timeout": 5},
                                    prepare=lab.stop_feed, undo=lab.start_feed)
    assert result.elapsed < 300
    check_case(request, result, failure_messages(result.stdout), "deb11-1",
               ["deb11-1 cannot ask feed python-feed", "Check the URL, DNS, the proxy and the "
                "firewall", "pipfeed_credential_helper_check_token: false"], before, after)


def test_wheel_whose_hash_does_not_match_fails_and_the_host_keeps_its_state(
        request, lab, workdir, fresh):
    """The hash is known only once the wheel is downloaded, in the wheelhouse play: the host is
    first brought to a working state (one pinned wheel), then the run with the wrong hash must
    leave that state exactly as it was."""
    request.node.user_properties.append(
        ("case", "a wheel whose hash does not match the lock (`wheel-hash-mismatch`)"))
    host = "deb13-1"
    good = workdir / "idna.txt"
    good.write_text("idna==3.20\n")
    cache = {"pipfeed_wheelhouse_cache_dir": str(workdir / "cache")}
    converge = run_playbooks(lab, workdir, SITE, {"pipfeed_wheelhouse_requirements": str(good), **cache},
                             "--limit", host)
    assert converge.returncode == 0, converge.stdout[-4000:]
    bad = workdir / "idna-bad-hash.txt"
    bad.write_text("idna==3.20 --hash=sha256:" + "0" * 64 + "\n")
    try:
        result, before, after = one_run(lab, workdir, host,
                                        {"pipfeed_wheelhouse_requirements": str(bad), **cache})
        check_case(request, result, failure_messages(result.stdout), host,
                   ["which is none of the hashes the requirement set lists for idna==3.20",
                    "The index serves another file than the one that was locked"], before, after)
        assert before.get("/var/lib/pipfeed/wheelhouse", "").startswith("link ")
    finally:
        clean(lab, host)
