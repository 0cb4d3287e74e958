"""Provenance records (hifa/provenance.py): checkpoint identities, the device, and the sessions of a run folder."""

import json

import pytest
import torch

from hifa import provenance
from hifa.provenance import ENVIRONMENT_FILE, checkpoint, fingerprint, read_sessions, record_session


def write(path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_a_folder_s_fingerprint_follows_its_configs_and_its_weights_bytes(tmp_path):
    folder = tmp_path / "model"
    write(folder / "unet" / "config.json", b'{"sample_size": 64}')
    weights = bytearray(range(256)) * (6 << 12)  # 6 MiB: above the size hashed whole
    write(folder / "unet" / "weights.safetensors", bytes(weights))
    first = fingerprint(folder)
    assert fingerprint(folder) == first and len(first) == 16
    write(folder / ".cache" / "huggingface" / "download.lock", b"x")  # the hub's download bookkeeping does not count
    assert fingerprint(folder) == first
    write(folder / "unet" / "config.json", b'{"sample_size": 96}')
    changed_config = fingerprint(folder)
    assert changed_config != first
    weights[-10] ^= 1  # a byte in the last MiB of the weights
    write(folder / "unet" / "weights.safetensors", bytes(weights))
    assert fingerprint(folder) != changed_config


def test_a_local_checkpoint_is_named_by_its_path_and_a_hub_one_by_its_cached_revision(tmp_path, monkeypatch):
    import huggingface_hub.constants

    folder = tmp_path / "tiny-sd"
    write(folder / "model_index.json", b"{}")
    local = checkpoint(str(folder))
    assert local == {"model": str(folder), "path": str(folder.resolve()), "fingerprint": fingerprint(folder)}
    revision = "0123456789abcdef0123456789abcdef01234567"
    cache = tmp_path / "hub"
    write(cache / "models--someone--some-model" / "refs" / "main", revision.encode())
    write(cache / "models--someone--some-model" / "snapshots" / revision / "model_index.json", b"{}")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    assert checkpoint("someone/some-model") == {"model": "someone/some-model", "revision": revision}
    assert checkpoint("someone/not-cached") == {"model": "someone/not-cached", "revision": None}


def test_the_environment_names_this_cpu_torch_and_the_checkpoints(tmp_path):
    folder = tmp_path / "dpt"
    write(folder / "config.json", b"{}")
    env = provenance.environment(torch.device("cpu"), {"depth": str(folder)})
    assert env["device"] == {"type": "cpu", "name": provenance.cpu_name(), "threads": torch.get_num_threads()}
    assert env["packages"]["torch"] == torch.__version__
    assert env["checkpoints"]["depth"]["fingerprint"] == fingerprint(folder)
    assert env["code"]["hifa"] == provenance.hifa.__version__
    json.dumps(env)  # what environment.json holds


def test_sessions_start_over_at_step_0_and_drop_those_from_lost_steps(tmp_path):
    record_session(tmp_path, 0, {"device": {"name": "a"}})
    record_session(tmp_path, 300, {"device": {"name": "b"}})
    record_session(tmp_path, 600, {"device": {"name": "c"}})
    assert [(s["from_step"], s["device"]["name"]) for s in read_sessions(tmp_path)] == [(0, "a"), (300, "b"), (600, "c")]
    # Resumed from the checkpoint of step 500: the session from step 600 trained steps that were lost.
    record_session(tmp_path, 500, {"device": {"name": "d"}})
    assert [s["from_step"] for s in read_sessions(tmp_path)] == [0, 300, 500]
    record_session(tmp_path, 0, {"device": {"name": "e"}})  # trained again from scratch
    assert [(s["from_step"], s["device"]["name"]) for s in read_sessions(tmp_path)] == [(0, "e")]
    assert json.loads((tmp_path / ENVIRONMENT_FILE).read_text())["schema"] == provenance.SCHEMA


@pytest.mark.parametrize("text", ["{not json", '{"sessions": 3}', "[]"])
def test_an_unreadable_environment_file_reads_as_no_sessions(tmp_path, text):
    (tmp_path / ENVIRONMENT_FILE).write_text(text)
    assert read_sessions(tmp_path) == []
    record_session(tmp_path, 100, {"device": {"name": "a"}})  # and a resume writes a good one
    assert [s["from_step"] for s in read_sessions(tmp_path)] == [100]


def test_a_resumed_session_names_what_changed_since_the_last_one(tmp_path):
    base = {"code": {"hifa": "0.1.0", "commit": "a" * 40, "modified": False}, "device": {"name": "AMD EPYC"},
            "packages": {"torch": "2.14.1", "diffusers": "0.42.1"},
            "checkpoints": {"prior": {"model": "sd2-community/sd", "revision": "b" * 40}}}
    assert record_session(tmp_path, 0, base) == []  # a fresh training continues nothing
    assert record_session(tmp_path, 100, base) == []  # the same setting: nothing to say
    assert record_session(tmp_path, 150, {**base, "device": {"name": "AMD EPYC", "threads": 2}}) == ["threads None -> 2"]
    moved = {**base, "code": {"hifa": "0.1.0", "commit": "c" * 40, "modified": True}, "device": {"name": "NVIDIA H100 80GB HBM3"},
             "packages": {"torch": "2.11.0+cu130", "diffusers": "0.42.1"},
             "checkpoints": {"prior": {"model": "/models/sd", "path": "/models/sd", "fingerprint": "0123456789abcdef"}}}
    assert record_session(tmp_path, 200, moved) == [
        "code aaaaaaa -> ccccccc (modified)", "device AMD EPYC -> NVIDIA H100 80GB HBM3", "torch 2.14.1 -> 2.11.0+cu130",
        "prior checkpoint sd2-community/sd @ bbbbbbb -> sd #01234567"]


def test_resuming_in_another_setting_is_logged(tmp_path, caplog):
    from hifa.trainer import Trainer
    from tests.test_train import tiny_config

    config = tiny_config(tmp_path, extra=["tracking.enabled=false"])
    Trainer(config, tmp_path / "run", progress=False).train(until=3)
    sessions = read_sessions(tmp_path / "run")
    sessions[0]["device"]["name"] = "Another CPU"  # as if the first session ran elsewhere
    (tmp_path / "run" / ENVIRONMENT_FILE).write_text(json.dumps({"sessions": sessions}))
    with caplog.at_level("WARNING", logger="hifa.trainer"):
        Trainer(config, tmp_path / "run", progress=False).train()
    assert f"at step 3 in another setting than its last session: device Another CPU -> {provenance.cpu_name()}" in caplog.text
    assert [s["device"]["name"] for s in read_sessions(tmp_path / "run")] == ["Another CPU", provenance.cpu_name()]


def test_a_training_s_record_follows_its_schema(tmp_path):
    import jsonschema

    folder = tmp_path / "tiny-model"
    write(folder / "config.json", b"{}")
    record_session(tmp_path, 0, provenance.environment(torch.device("cpu"), {"prior": str(folder), "depth": "someone/not-cached"}))
    schema = json.loads((provenance.Path(provenance.__file__).parent / "environment.schema.json").read_text())
    jsonschema.validate(json.loads((tmp_path / ENVIRONMENT_FILE).read_text()), schema)
    with pytest.raises(jsonschema.ValidationError):  # the schema does reject a broken record
        jsonschema.validate({"schema": provenance.SCHEMA, "sessions": [{"from_step": -1}]}, schema)
