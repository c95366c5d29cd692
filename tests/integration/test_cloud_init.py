"""The cloud-init entry point on a fresh Debian 12 cloud image of the lab: the rendered
user-data passes the real `cloud-init schema` and Azure's custom-data limit; cloud-init's own
stages (NoCloud seed, run by hand: a container has no systemd) install the project and
ansible-core from the feed and run site.yml on the VM; verify.yml then passes on it, its
managed files match a host provisioned over SSH, and the token is nowhere but its files and
cloud-init's root-only copies of the user-data."""
from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.integration.support import must, recap, run_playbooks, sh, sudo, unprovision
from tests.lab import packages

pytestmark = pytest.mark.integration
SSH_HOST = "deb12-1"
STAGES = ("init --local", "init", "modules --mode config", "modules --mode final")
SEED = "/var/lib/cloud/seed/nocloud"
# What the SSH path and the first boot must leave the same.
MANAGED_FILES = ("/etc/pip.conf", "/etc/uv/uv.toml", "/etc/pipfeed/credential-helper.json",
                 "/var/lib/pipfeed/wheelhouse/manifest.json",
                 "/var/lib/pipfeed/wheelhouse/requirements.txt")
MANAGED_MODES = ("/etc/pipfeed", "/etc/pipfeed/tokens", "/etc/pipfeed/tokens/python-feed.token",
                 "/etc/pipfeed/netrc", "/usr/local/lib/pipfeed/pipfeed-keyring",
                 "/var/lib/pipfeed/wheelhouse/", "/etc/pip.conf", "/etc/uv/uv.toml")


def upload_to_feed(lab, wheel: Path) -> None:
    """twine, as a feed admin would; 409 means the feed has the file already."""
    env = packages.controller_env(for_lab=True, TWINE_USERNAME="pipfeed",
                                  TWINE_PASSWORD=lab.token)
    done = subprocess.run([str(Path(sys.executable).with_name("twine")), "upload",
                           "--non-interactive", "--disable-progress-bar", "--cert",
                           str(lab.ca_file), "--repository-url", upload_url(lab), str(wheel)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 or "409" in done.stdout + done.stderr, done.stdout + done.stderr


def upload_url(lab) -> str:
    return f"https://{lab.gateway}{lab.feed_path}/upload/"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("cloud-init")


@pytest.fixture(scope="module")
def vm(lab):
    """A fresh cloud VM in the lab, removed at the end."""
    host = lab.add_host("deb12ci")
    yield host.name
    lab.remove_host(host.name)


def render(lab, workdir: Path, vm: str, dest: Path, **settings):
    return run_playbooks(lab, workdir, ["playbooks/cloud_init.yml"], {
        "pipfeed_cloud_init_dest": str(dest),
        "pipfeed_cloud_init_upload": True,
        "pipfeed_cloud_init_upload_url": upload_url(lab),
        "pipfeed_cloud_init_upload_ca": str(lab.ca_file),
        **settings}, "--limit", vm)


@pytest.fixture(scope="module")
def rendered(lab, workdir, vm):
    """The user-data for the VM (token inside it, the default), and a Key Vault variant."""
    # ansible-core and what the feed lacks of its dependencies, cached when the lab came up.
    for wheel in sorted(packages.ensure_bootstrap_wheels().glob("*.whl")):
        upload_to_feed(lab, wheel)
    first = render(lab, workdir, vm, workdir / "user-data")
    assert first.returncode == 0, first.stdout[-5000:] + first.stderr
    vault = render(lab, workdir, vm, workdir / "key-vault",
                   pipfeed_cloud_init_token_source="key_vault",
                   pipfeed_cloud_init_key_vault_name="contoso-kv",
                   pipfeed_cloud_init_key_vault_secrets={"python-feed": "python-feed-pat"})
    assert vault.returncode == 0, vault.stdout[-5000:] + vault.stderr
    # The VM's managed identity gives the feed's token: the controller keeps its own (here the
    # lab's token, for the upload), which goes nowhere near the user-data.
    identity = render(lab, workdir, vm, workdir / "identity", pipfeed_feeds=[
        {"name": "python-feed", "url": lab.feed_url, "azure_identity": {},
         "token_var": "lab_feed_token"}])
    assert identity.returncode == 0, identity.stdout[-5000:] + identity.stderr
    for result in (first, vault, identity):
        assert lab.token not in result.stdout + result.stderr
    return {"user_data": workdir / "user-data" / f"{vm}.yml",
            "key_vault": workdir / "key-vault" / f"{vm}.yml",
            "identity": workdir / "identity" / f"{vm}.yml", "first": first}


@pytest.fixture(scope="module")
def booted(lab, vm, rendered):
    """cloud-init's four stages from a NoCloud seed, as a VM's first boot runs them."""
    must(lab, vm, sudo(f"install -D -m 0600 -o root -g root /dev/stdin {SEED}/user-data && "
                       f"printf 'instance-id: iid-{vm}\\nlocal-hostname: {vm}\\n' "
                       f"> {SEED}/meta-data"),
         stdin=rendered["user_data"].read_bytes())
    codes = {}
    for stage in STAGES:
        codes[stage] = sh(lab, vm, sudo(f"cloud-init {stage}"), timeout=1200)[0]
    return codes


@pytest.fixture(scope="module")
def over_ssh(lab, workdir):
    """The same Debian 12 provisioned the usual way: site.yml over SSH, from a clean host."""
    unprovision(lab, SSH_HOST)
    result = run_playbooks(lab, workdir, ["site.yml"], {}, "--limit", SSH_HOST)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr
    yield result
    # The lab's hosts are shared by the modules that follow: leave this one as it came.
    unprovision(lab, SSH_HOST)


def schema(lab, vm: str, text: bytes) -> tuple:
    must(lab, vm, "install -m 0600 /dev/stdin /tmp/user-data.yml", stdin=text)
    try:
        return sh(lab, vm, sudo("cloud-init schema --config-file /tmp/user-data.yml"))
    finally:
        sh(lab, vm, "rm -f /tmp/user-data.yml")


def test_user_data_passes_cloud_init_schema_and_fits_azure_custom_data(lab, vm, rendered):
    for variant in ("user_data", "key_vault", "identity"):
        text = rendered[variant].read_bytes()
        rc, out, err = schema(lab, vm, text)
        assert rc == 0 and "Valid cloud-config" in out + err, out + err
        # Azure takes at most 64 KB of base64-encoded custom data.
        assert len(base64.b64encode(text)) <= 65536
        assert rendered[variant].stat().st_mode & 0o777 == 0o600
    # The validator does fail: a write_files entry without its path is refused.
    broken = rendered["user_data"].read_text().replace("  - path: /usr/local/sbin/",
                                                       "  - file: /usr/local/sbin/")
    rc, out, err = schema(lab, vm, broken.encode())
    assert rc != 0 and "'path' is a required property" in out + err


def test_key_vault_user_data_carries_no_token(lab, rendered):
    text = rendered["key_vault"].read_text()
    assert lab.token not in text
    files = {f["path"] for f in yaml.safe_load(text)["write_files"]}
    assert not any(p.endswith(".token") for p in files)
    assert lab.token in rendered["user_data"].read_text()


def test_managed_identity_user_data_carries_no_token_at_all(lab, rendered):
    """No token file, no Key Vault: the bootstrap asks the VM's identity for the feed's token,
    and the VM's inventory gives the feed azure_identity and no token source."""
    text = rendered["identity"].read_text()
    assert lab.token not in text
    data = yaml.safe_load(text)
    files = {f["path"]: f["content"] for f in data["write_files"]}
    assert not any(p.endswith(".token") for p in files)
    settings = json.loads(files["/var/lib/pipfeed-bootstrap/bootstrap.json"])
    assert settings["feed"]["azure_identity"] == {}
    inventory = json.loads(files["/var/lib/pipfeed-bootstrap/inventory.json"])
    assert inventory["all"]["vars"]["pipfeed_feeds"] == [
        {"name": "python-feed", "url": lab.feed_url, "azure_identity": {}}]
    assert "lab_feed_token" not in inventory["all"]["vars"]
    assert "every feed's token comes from the VM's managed identity" in text


def test_rendering_again_changes_nothing(lab, workdir, vm, rendered):
    again = render(lab, workdir, vm, workdir / "user-data")
    assert again.returncode == 0, again.stdout[-5000:]
    assert recap(again.stdout)[vm]["changed"] == 0, again.stdout[-3000:]


def test_first_boot_runs_site_yml_and_every_stage_succeeds(lab, vm, booted):
    assert booted == dict.fromkeys(STAGES, 0)
    result = json.loads(must(lab, vm, "cat /run/cloud-init/result.json"))
    assert result["v1"]["errors"] == []
    output = must(lab, vm, sudo("cat /var/log/cloud-init-output.log"))
    assert "pipfeed-bootstrap: done" in output, output[-4000:]
    assert f"{vm}  HEALTHY" in output
    # The bootstrap's secrets are gone; ansible-core came from the feed, not from PyPI.
    assert sh(lab, vm, sudo("test -e /run/pipfeed-bootstrap"))[0] != 0
    assert "ansible-core" in must(lab, vm, "/opt/pipfeed/ansible/bin/pip list "
                                  "--disable-pip-version-check")


def test_verify_passes_on_the_first_boot_host_and_the_ssh_host(lab, workdir, vm, booted,
                                                                over_ssh):
    result = run_playbooks(lab, workdir, ["playbooks/verify.yml"], {},
                           "--limit", f"{vm},{SSH_HOST}")
    assert result.returncode == 0, result.stdout[-5000:]
    for host in (vm, SSH_HOST):
        assert f"{host}  HEALTHY" in result.stdout


def test_managed_files_match_a_host_provisioned_over_ssh(lab, vm, booted, over_ssh):
    for path in MANAGED_FILES:
        assert (must(lab, vm, sudo(f"cat {path}"))
                == must(lab, SSH_HOST, sudo(f"cat {path}"))), path
    stat = sudo("stat -c '%n %a %U %G %F' " + " ".join(MANAGED_MODES)
                + " && readlink /usr/local/bin/keyring /usr/bin/keyring /root/.netrc"
                " /home/labadmin/.netrc && id -nG labadmin"
                " && sha256sum /etc/pipfeed/tokens/python-feed.token /etc/pipfeed/netrc")
    assert must(lab, vm, stat) == must(lab, SSH_HOST, stat)


def test_token_is_only_in_its_files_and_cloud_inits_root_only_user_data(lab, vm, booted):
    """The canary is the lab's token itself. The user-data carries it on this path, so
    cloud-init's copies of the user-data hold it too: all root-only. Nothing else does: no log,
    no instance data, no world-readable file."""
    found = must(lab, vm, sudo(
        "read -r t; printf %s \"$t\" > /root/.canary; "
        "grep -rlsF -f /root/.canary /etc /var /run /tmp /opt /root /home /usr/local"
        " | grep -vx /root/.canary | xargs -r stat -c '%a %U %n'; rm -f /root/.canary"),
        stdin=(lab.token + "\n").encode())
    holders = {}
    for line in found.splitlines():
        mode, owner, path = line.split(" ", 2)
        holders[path] = (mode, owner)
    instance = must(lab, vm, "readlink -f /var/lib/cloud/instance").strip()
    assert holders == {
        "/etc/pipfeed/tokens/python-feed.token": ("640", "root"),
        "/etc/pipfeed/netrc": ("640", "root"),
        f"{SEED}/user-data": ("600", "root"),
        f"{instance}/user-data.txt": ("600", "root"),
        f"{instance}/user-data.txt.i": ("600", "root"),
        f"{instance}/cloud-config.txt": ("600", "root"),
        f"{instance}/obj.pkl": ("400", "root"),
    }, found
    logs = must(lab, vm, sudo("cat /var/log/cloud-init*.log /run/cloud-init/instance-data*.json"))
    assert lab.token not in logs and "pipfeed-bootstrap: done" in logs
