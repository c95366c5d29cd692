"""The install benchmark's arithmetic (bench/figures.py): the requirement set it loads, the
medians and ratios it prints, the feed requests it counts, its extrapolation, its targets."""
from __future__ import annotations

import pytest

from bench import figures
from bench.figures import BenchError, Extrapolation, Requests, Result
from bench.runner import REQUIREMENTS, SAMPLE, way_commands

pytestmark = pytest.mark.unit


def write(tmp_path, text: str):
    path = tmp_path / "requirements.txt"
    path.write_text(text)
    return path


def test_benchmark_set_is_pinned_big_enough_and_compiled():
    pins = dict(figures.load_requirements(REQUIREMENTS))
    assert len(pins) >= 35
    for name in ("azure-identity", "azure-storage-blob", "cryptography", "numpy", "pandas",
                 "pydantic", "pydantic-core", "cffi"):
        assert name in pins, name
    # The sample timed with PyPI dropped is part of the set.
    assert set(SAMPLE) <= set(pins)


def test_requirements_are_normalized_and_comments_ignored(tmp_path):
    path = write(tmp_path, "# set\nPyYAML==6.0.3  # compiled\n\nTyping_Extensions==4.16.0\n")
    assert figures.load_requirements(path) == [("pyyaml", "6.0.3"),
                                               ("typing-extensions", "4.16.0")]


@pytest.mark.parametrize("line", ["numpy>=2", "numpy", "numpy==2.4.6 ; python_version < '3.12'",
                                  "-r other.txt", "numpy @ https://example.invalid/n.whl"])
def test_unpinned_line_is_named_with_its_number(tmp_path, line):
    path = write(tmp_path, f"idna==3.20\n{line}\n")
    with pytest.raises(BenchError, match=r"requirements.txt:2: .* not pinned as name==version"):
        figures.load_requirements(path)


def test_a_project_pinned_twice_is_refused(tmp_path):
    path = write(tmp_path, "idna==3.20\nIDNA==3.19\n")
    with pytest.raises(BenchError, match=r":2: idna is pinned again \(first on line 1\)"):
        figures.load_requirements(path)


def test_an_empty_set_is_refused(tmp_path):
    with pytest.raises(BenchError, match="no requirement"):
        figures.load_requirements(write(tmp_path, "# nothing\n"))


def test_cache_key_follows_the_set_and_the_platform(tmp_path):
    path = write(tmp_path, "idna==3.20\n")
    key = figures.set_key(path, "3.11", ["manylinux_2_28_x86_64"])
    assert key == figures.set_key(path, "3.11", ["manylinux_2_28_x86_64"])
    assert key != figures.set_key(path, "3.13", ["manylinux_2_28_x86_64"])
    assert key != figures.set_key(path, "3.11", ["any"])
    path.write_text("idna==3.19\n")
    assert key != figures.set_key(path, "3.11", ["manylinux_2_28_x86_64"])


def test_installed_venv_is_checked_against_every_pin():
    pins = [("pyyaml", "6.0.3"), ("numpy", "2.4.6"), ("idna", "3.20")]
    found = {"PyYAML": "6.0.3", "numpy": "2.4.5", "pip": "23.0.1"}
    assert figures.check_installed(pins, found) == ["numpy is 2.4.5, not 2.4.6",
                                                    "idna is not installed"]
    assert figures.check_installed(pins, {**found, "numpy": "2.4.6", "idna": "3.20"}) == []


def test_timing_line_gives_status_and_seconds():
    output = "Successfully installed x\npipfeed-bench rc=0 ns=12345000000\n"
    assert figures.parse_timing(output) == (0, 12.345)
    assert figures.parse_timing("pipfeed-bench rc=1 ns=5\n")[0] == 1
    with pytest.raises(BenchError, match="no timing line"):
        figures.parse_timing("Connection reset\n")


def test_feed_requests_are_counted_by_kind_with_blob_bytes():
    entries = [
        {"kind": "simple", "status": 200, "bytes": 900},
        {"kind": "download", "status": 303, "bytes": 0},
        {"kind": "blob", "status": 200, "bytes": 2_000_000},
        {"kind": "blob", "status": 200, "bytes": 500_000},
        {"kind": "other", "status": 404, "bytes": 10},
    ]
    counted = figures.count_requests(entries)
    assert (counted.index, counted.redirects, counted.blobs, counted.other) == (1, 1, 2, 1)
    assert counted.total == 5 and counted.blob_bytes == 2_500_000
    assert counted.describe() == "5 (1 index, 1 303, 2 blob, 1 other; 2.5 MB)"
    assert figures.count_requests([]).describe() == "0"


def test_median_of_runs():
    assert figures.median([3.0, 1.0, 2.0]) == 2.0
    assert figures.median([4.0, 1.0, 2.0, 3.0]) == 2.5
    with pytest.raises(BenchError):
        figures.median([])


def test_extrapolation_adds_the_per_project_cost_to_the_base_way():
    guess = Extrapolation(sample=2, sample_seconds=200.0, sample_base_seconds=20.0, projects=43,
                          base_seconds=330.0, base_label="way 1, PyPI refused",
                          this_label="PyPI dropped")
    assert guess.extra_per_project == 90.0
    assert guess.seconds == 330.0 + 43 * 90.0
    assert "extrapolated, not measured" in guess.explain()
    assert "43 x 90.0 s = 4200 s (70.0 min)" in guess.explain()
    # A sample no slower than its base adds nothing (noise, not a negative cost).
    assert Extrapolation(1, 5.0, 6.0, 43, 30.0, "b", "t").seconds == 30.0


def result(key: str, *seconds: float, requests: int = 0) -> Result:
    made = Result(key, key, list(seconds))
    made.requests = [Requests(index=requests) for _ in seconds]
    return made


def test_targets_are_met_or_not_by_the_medians():
    results = {k: result(k, *v) for k, v in {
        "1r": (300.0, 310.0, 290.0), "2": (20.0, 21.0, 22.0), "3b": (10.0, 10.2, 9.8),
        "4": (10.5, 10.9, 10.4), "5c": (3.0,), "5w": (1.0,)}.items()}
    lines = "\n".join(figures.target_lines(results))
    assert "way 4 is 28.57x faster than way 1r  ->  met" in lines
    assert "way 4 is 2.00x faster than way 2  ->  met" in lines
    assert "way 4 is 1.05x slower than way 3b  ->  met" in lines
    assert "way 5w is 10.50x faster than way 4  ->  met" in lines
    assert "way 4 sends no request to the feed: most in a run 0  ->  met" in lines
    results["4"] = result("4", 12.0, 12.0, requests=3)
    lines = "\n".join(figures.target_lines(results))
    assert "way 4 is 1.20x slower than way 3b  ->  NOT MET" in lines
    assert "way 4 sends no request to the feed: most in a run 3  ->  NOT MET" in lines
    del results["5c"]
    assert "(uv, cold cache) at most a third of way 4: not run" in "\n".join(
        figures.target_lines(results))


def test_target_against_an_estimate_says_so():
    results = {"1r": result("1r", 300.0), "4": result("4", 10.0)}
    results["1r"].estimated = True
    assert "than way 1r (against an estimate)  ->  met" in "\n".join(
        figures.target_lines(results))


def test_table_prints_medians_runs_and_ratios_to_way_4():
    results = {"4": result("4", 10.0, 12.0, 11.0), "2": result("2", 22.0, 20.0, 21.0,
                                                                requests=129)}
    results["2"].note = "pip's cache never hits"
    lines = figures.table(results)
    assert lines[0].split()[:3] == ["way", "median", "x"]
    assert lines[1].split()[:5] == ["4", "11.0", "s", "1.00", "10.0,"]
    assert lines[2].split()[:4] == ["2", "21.0", "s", "1.91"]
    assert "129 (129 index, 0 303, 0 blob" in lines[2]
    assert lines[3].strip() == "pip's cache never hits"


def test_seed_ways_read_no_config_file_and_the_configured_way_is_the_plain_command():
    commands = way_commands("https://feed.example/simple/")
    for key in ("1r", "2", "3a", "3b"):
        assert "PIP_CONFIG_FILE=/dev/null" in commands[key], key
    assert "PIP_EXTRA_INDEX_URL=https://feed.example/simple/" in commands["1r"]
    assert "PIP_INDEX_URL=https://feed.example/simple/" in commands["2"]
    assert commands["4"].endswith("&& pip install --no-index -r requirements.txt")
    assert "PIP_" not in commands["4"]
    assert commands["5c"].endswith("uv pip install --offline -r requirements.txt")
    # The seeds' script, in its order: upgrade pip and wheel, pip wheel, pip install --no-index.
    script = commands["3a"]
    assert script.index("pip install pip wheel --upgrade") < script.index(
        "pip wheel --find-links=$PIP_CACHE_DIR --wheel-dir=$PIP_CACHE_DIR") < script.index(
        "pip install --find-links=$PIP_CACHE_DIR --no-index")


def test_benchmark_wheels_join_the_feed_without_replacing_its_files(tmp_path):
    from tests.lab.lab import Lab, LabError

    lab = Lab("benchunit")
    lab.dir = tmp_path / "lab"
    with pytest.raises(LabError, match="no feed package directory"):
        lab.add_feed_packages([])
    feed = lab.dir / "feed-packages"
    feed.mkdir(parents=True)
    (feed / "idna-3.20-py3-none-any.whl").write_bytes(b"the feed's own")
    source = tmp_path / "bench"
    source.mkdir()
    (source / "idna-3.20-py3-none-any.whl").write_bytes(b"another copy")
    (source / "mdurl-0.1.2-py3-none-any.whl").write_bytes(b"new")
    added = lab.add_feed_packages(sorted(source.iterdir()))
    assert added == ["mdurl-0.1.2-py3-none-any.whl"]
    assert (feed / "idna-3.20-py3-none-any.whl").read_bytes() == b"the feed's own"
    assert (feed / "mdurl-0.1.2-py3-none-any.whl").read_bytes() == b"new"
    assert sorted(p.name for p in feed.iterdir()) == ["idna-3.20-py3-none-any.whl",
                                                      "mdurl-0.1.2-py3-none-any.whl"]


def test_wheel_files_name_their_projects_once():
    assert figures.projects_of(["pip-26.3-py3-none-any.whl", "wheel-0.48.0-py3-none-any.whl",
                                "Typing_Extensions-4.16.0-py3-none-any.whl",
                                "pip-26.3-py3-none-any.whl", ""]) == [
        "pip", "typing-extensions", "wheel"]


def test_quick_is_one_run_of_everything_and_runs_must_be_positive(capsys):
    from bench.runner import parse_args

    args = parse_args(["--quick", "--runs", "5"])
    assert (args.runs, args.slow_runs, args.quick) == (1, 1, True)
    assert (parse_args([]).runs, parse_args([]).slow_runs) == (3, 2)
    with pytest.raises(SystemExit):
        parse_args(["--runs", "0"])
    assert "--runs and --slow-runs must be 1 or more" in capsys.readouterr().err


# ----- the fleet benchmark (bench/fleet_figures.py, bench/fleet.py) ------------------------------

from bench import fleet_figures as fleetfig  # noqa: E402
from bench.fleet_figures import FleetError, Run, Size  # noqa: E402

RECAP = """\
TASK [pipfeed.feed.pipfeed_config : Check the host before anything changes, and show its platform] ***
ok: [deb11-1] => (item=x)

PLAY RECAP *********************************************************************
deb11-1                    : ok=38   changed=5    unreachable=0    failed=0    skipped=6    rescued=0    ignored=0
deb12-1                    : ok=36   changed=5    unreachable=0    failed=0    skipped=6    rescued=0    ignored=0
deb13-1                    : ok=36   changed=4    unreachable=0    failed=0    skipped=6    rescued=0    ignored=0
"""


def test_recap_is_read_per_host_from_the_last_recap_only():
    earlier = "PLAY RECAP ***\nold-1 : ok=1 changed=1 unreachable=0 failed=0 skipped=0\n\n"
    stats = fleetfig.parse_recap(earlier + RECAP)
    assert sorted(stats) == ["deb11-1", "deb12-1", "deb13-1"]
    assert stats["deb11-1"] == {"ok": 38, "changed": 5, "unreachable": 0, "failed": 0,
                                "skipped": 6, "rescued": 0, "ignored": 0}
    with pytest.raises(FleetError, match="no PLAY RECAP"):
        fleetfig.parse_recap("fatal: [deb11-1]: UNREACHABLE!\n")


def test_recap_check_wants_every_host_none_failed_and_the_changes_due():
    stats = fleetfig.parse_recap(RECAP)
    hosts = ["deb11-1", "deb12-1", "deb13-1"]
    fleetfig.check_recap(stats, hosts, "every", "first run")
    fleetfig.check_recap(stats, hosts, "any", "warm-up")
    with pytest.raises(FleetError, match=r"first run: expected changed=0 on every host; "
                                         r"changed on \['deb11-1', 'deb12-1', 'deb13-1'\]"):
        fleetfig.check_recap(stats, hosts, "none", "first run")
    with pytest.raises(FleetError, match=r"missing \['deb11-2'\], extra \[\]"):
        fleetfig.check_recap(stats, hosts + ["deb11-2"], "every", "first run")
    stats["deb12-1"]["changed"] = 0
    with pytest.raises(FleetError, match=r"rotation: expected a change on every host; none on "
                                         r"\['deb12-1'\]"):
        fleetfig.check_recap(stats, hosts, "every", "rotation")
    stats["deb13-1"]["unreachable"] = 1
    with pytest.raises(FleetError, match=r"failed or unreachable hosts: \['deb13-1'\]"):
        fleetfig.check_recap(stats, hosts, "any", "rotation")


def test_tasks_per_host_show_a_range_where_hosts_differ():
    assert fleetfig.tasks_per_host(fleetfig.parse_recap(RECAP)) == "36-38/4-5/6"
    assert fleetfig.span([]) == "-"


def test_a_size_takes_the_first_hosts_of_each_debian_by_number():
    names = [f"deb{d}-{i}" for d in (11, 12, 13) for i in (1, 2, 10, 3)] + ["deb12ci-1"]
    assert fleetfig.hosts_of_size(names, 6) == ["deb11-1", "deb11-2", "deb12-1", "deb12-2",
                                                "deb13-1", "deb13-2"]
    assert fleetfig.hosts_of_size(names, 12)[:4] == ["deb11-1", "deb11-2", "deb11-3", "deb11-10"]
    with pytest.raises(FleetError, match="15 hosts need 5 deb11 hosts; the lab has 4"):
        fleetfig.hosts_of_size(names, 15)
    with pytest.raises(FleetError, match="multiple of 3"):
        fleetfig.hosts_of_size(names, 4)


def test_sizes_are_multiples_of_three_that_grow():
    assert fleetfig.parse_sizes("3,12,24,48") == [3, 12, 24, 48]
    for bad, message in (("3,4", "not a multiple of 3"), ("12,3", "must grow"),
                         ("3,3", "must grow"), ("", "names no size"), ("3,x", "numbers")):
        with pytest.raises(FleetError, match=message):
            fleetfig.parse_sizes(bad)


def test_waves_of_workers():
    assert [fleetfig.waves(n, 25) for n in (3, 24, 25, 26, 48)] == [1, 1, 1, 2, 2]


def size(hosts: int, ping: list[float], noop: list[float], first: float | None = None,
         cpu_per_host: float = 2.0) -> Size:
    made = Size(hosts, 25, complete=True)
    stats = {f"h{i}": {"ok": 31, "changed": 0, "skipped": 9} for i in range(hosts)}
    for seconds in ping:
        made.add("ping", Run(seconds, 0.1 * hosts))
    for seconds in noop:
        made.add("noop", Run(seconds, cpu_per_host * hosts, stats))
    if first is not None:
        made.add("first", Run(first, 3.0 * hosts, stats))
    return made


def test_size_medians_ratios_and_per_host_figures():
    made = size(12, [3.0, 2.0, 4.0], [20.0, 18.0, 30.0], first=40.0)
    assert made.seconds("noop") == 20.0 and made.ratio("noop") == 20.0 / 3.0
    assert made.cpu_per_host("noop") == pytest.approx(2.0)
    assert made.wall_per_host("noop") == pytest.approx(20.0 / 12)
    assert made.ratio("rotation") is None
    lines = fleetfig.size_table(made)
    assert lines[0] == "12 hosts (4 per Debian), forks 25 (1 wave of workers per task)"
    noop = next(line for line in lines if "nothing to change" in line)
    assert noop.split()[4:8] == ["20.00s", "6.67x", "24.00", "2.000s"]
    assert noop.split()[8] == "31/0/9" and noop.endswith("20.0, 18.0, 30.0")
    assert not any("token rotated" in line for line in lines)
    with pytest.raises(FleetError):
        fleetfig.median([])
    made.complete = False
    assert fleetfig.size_table(made)[0].endswith(": INCOMPLETE, an error stopped its runs")


def test_a_failed_run_is_shown_by_its_task_and_first_error():
    output = ("TASK [pipfeed.feed.pipfeed_config : Check the host] ***\nok: [deb11-1]\n\n"
              "TASK [pipfeed.feed.pipfeed_credential_helper : Install the helper] ***\n"
              "[ERROR]: Task failed: argument of type 'NoneType' is not iterable\n"
              "Origin: install.yml:5:3\n"
              "fatal: [deb11-1]: FAILED! => \n    msg: boom\n"
              "fatal: [deb12-1]: FAILED! => \n    msg: boom\n" + RECAP)
    excerpt = fleetfig.failure_excerpt(output, lines=3).splitlines()
    assert excerpt == ["TASK [pipfeed.feed.pipfeed_credential_helper : Install the helper] ***",
                       "[ERROR]: Task failed: argument of type 'NoneType' is not iterable",
                       "Origin: install.yml:5:3", "fatal: [deb11-1]: FAILED! => ",
                       "(2 failed host results)"]
    assert fleetfig.failure_excerpt("a\nb\nc\n", lines=2) == "b\nc"


def test_targets_are_judged_at_24_hosts_and_growth_from_12_to_48():
    sizes = [size(12, [3.0], [18.0], first=30.0, cpu_per_host=1.0),
             size(24, [4.0], [16.0], first=40.0, cpu_per_host=1.2),
             size(48, [6.0], [60.0], first=100.0, cpu_per_host=1.4)]
    lines = [t.line() for t in fleetfig.targets(sizes)]
    assert lines[0] == ("  nothing to change at 24 hosts, x ping on the same hosts: 4.00x, "
                        "target <= 4x  ->  met")
    assert lines[1].endswith("10.00x, target <= 8x  ->  MISSED")
    assert lines[2] == ("  controller CPU per host, nothing to change, at 24 hosts: 1.20 s "
                        "(at 12, 24, 48 hosts: 1.00, 1.20, 1.40 s), target <= 1.5 s  ->  met")
    assert lines[3].endswith("48 hosts over 12: 1.40x, target <= 1.3x  ->  MISSED")
    # Wall per host: 60/48 over 18/12.
    assert lines[4].endswith(f"{(60 / 48) / (18 / 12):.2f}x, target <= 1.3x  ->  met")
    growth = "\n".join(fleetfig.growth_lines(sizes))
    assert "nothing to change" in growth and "CPU 1.40x, wall 0.83x" in growth
    assert "token rotated" not in growth


def test_targets_of_sizes_not_run_say_so():
    lines = [t.line() for t in fleetfig.targets([size(3, [1.0], [5.0]), size(12, [2.0], [9.0])])]
    assert lines[0].endswith("not measured (size not run)")
    assert lines[2].endswith("not measured (size not run; at 3, 12 hosts: 2.00, 2.00 s)")
    assert lines[3].endswith("not measured (size not run)")


def test_curve_has_a_line_per_size_with_ratios_to_ping():
    lines = fleetfig.curve([size(3, [2.0], [8.0], first=16.0), size(12, [3.0], [18.0])])
    assert lines[0].split()[:3] == ["hosts", "ping", "first"]
    assert lines[1].split()[:6] == ["3", "2.00s", "16.0s", "(", "8.0x)", "8.0s"]
    assert lines[2].split()[:4] == ["12", "3.00s", "-", "18.0s"]


def test_fleet_options_quick_and_recording(tmp_path):
    from bench.fleet import parse_args, record
    args = parse_args([])
    assert (args.size_list, args.runs, args.first_runs, args.rotations) == ([3, 12, 24, 48], 3, 3, 1)
    assert args.record
    quick = parse_args(["--quick"])
    assert (quick.size_list, quick.runs, quick.record) == ([3, 12], 1, False)
    assert not parse_args(["--sizes", "3,12"]).record
    assert not parse_args(["--no-record"]).record
    with pytest.raises(SystemExit):
        parse_args(["--sizes", "3,5"])
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- fleet-bench:begin -->\nold\n<!-- fleet-bench:end -->\nafter\n")
    assert record(["line 1", "line 2"], readme)
    assert readme.read_text() == ("# x\n<!-- fleet-bench:begin -->\n```\nline 1\nline 2\n```\n"
                                  "<!-- fleet-bench:end -->\nafter\n")
    readme.write_text("no markers\n")
    assert not record(["x"], readme)
