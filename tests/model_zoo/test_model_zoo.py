"""centermask.model_zoo and centermask://: published checkpoints by name, downloaded once into a
cache with a recorded sha256. A local HTTP server on 127.0.0.1 stands in for the published hosts
(through $CENTERMASK_MIRROR); no test touches the internet."""

import hashlib
import http.server
import io
import socket
import threading
from argparse import Namespace
from pathlib import Path

import pytest
import torch
from detectron2.utils.file_io import PathManager

from centermask import model_zoo
from centermask.config import get_cfg
from centermask.engine import Trainer, build_config

NAME = "centermask/centermask_lite_V_19_slim_dw_eSE_FPN_ms_4x"
FILE = "centermask-lite-V-19-eSE-slim-dw-FPN-ms-4x.pth"


class _Server(http.server.ThreadingHTTPServer):
    """Serves ``files`` ({name: bytes}); counts requests; ``truncate`` sends a full
    Content-Length but only half of the body, then closes the connection."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files, self.requests, self.truncate = {}, [], False

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        server = self.server
        server.requests.append(self.path)
        body = server.files.get(self.path.lstrip("/"))
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if server.truncate else body)
        if server.truncate:
            self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def server(monkeypatch, tmp_path):
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("CENTERMASK_MIRROR", srv.url + "/")
    monkeypatch.setenv("CENTERMASK_CACHE", str(tmp_path / "cache"))
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def checkpoint():
    """A synthetic checkpoint of the Lite V-19-slim-dw config (random weights), as bytes."""
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file(NAME))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu"])
    torch.manual_seed(1)
    state = Trainer.build_model(cfg).state_dict()
    buffer = io.BytesIO()
    torch.save({"model": state}, buffer)
    return buffer.getvalue(), state


def test_a_checkpoint_is_downloaded_once_with_its_sha256_recorded(server, checkpoint):
    data, _ = checkpoint
    server.files[FILE] = data
    path = PathManager.get_local_path(f"centermask://{NAME}")
    assert Path(path).read_bytes() == data
    assert Path(path).parent == Path(model_zoo.cache_dir())
    assert Path(path + ".sha256").read_text().strip() == hashlib.sha256(data).hexdigest()
    assert server.requests == [f"/{FILE}"]
    # Cache hit, by any accepted spelling of the name: no second request.
    for name in (NAME, "centermask_lite_V_19_slim_dw_eSE_FPN_ms_4x.yaml"):
        assert PathManager.get_local_path(f"centermask://{name}") == path
    assert len(server.requests) == 1
    # force=True downloads again.
    assert PathManager.get_local_path(f"centermask://{NAME}", force=True) == path
    assert len(server.requests) == 2 and Path(path).read_bytes() == data


def test_an_interrupted_download_leaves_no_file_and_the_next_call_succeeds(server, checkpoint):
    data, _ = checkpoint
    server.files[FILE] = data
    server.truncate = True
    with pytest.raises(model_zoo.DownloadError, match=f"Could not download {server.url}/{FILE}"):
        PathManager.get_local_path(f"centermask://{NAME}")
    cache = Path(model_zoo.cache_dir())
    assert not [p.name for p in cache.iterdir() if not p.name.endswith(".lock")]
    server.truncate = False
    path = PathManager.get_local_path(f"centermask://{NAME}")
    assert Path(path).read_bytes() == data and len(server.requests) == 2


def test_a_cached_file_that_changed_fails_its_checksum(server, checkpoint):
    server.files[FILE] = checkpoint[0]
    path = Path(PathManager.get_local_path(f"centermask://{NAME}"))
    path.write_bytes(checkpoint[0][:-10])
    with pytest.raises(model_zoo.ChecksumError, match=f"{path} has sha256 .* Delete both files"):
        PathManager.get_local_path(f"centermask://{NAME}")
    assert len(server.requests) == 1


def test_without_network_the_error_names_the_url_and_the_local_file_way(monkeypatch, tmp_path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("CENTERMASK_MIRROR", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("CENTERMASK_CACHE", str(tmp_path))
    with pytest.raises(
        model_zoo.DownloadError,
        match=rf"http://127\.0\.0\.1:{port}/{FILE}.*MODEL\.WEIGHTS /path/to/{FILE}.*{tmp_path}",
    ):
        PathManager.get_local_path(f"centermask://{NAME}")


def test_unknown_names_and_missing_config_files_fail_clearly():
    with pytest.raises(KeyError, match=r"'centermask_lite_V_39_FPN'.*Did you mean centermask/"):
        model_zoo.get_checkpoint_url("centermask_lite_V_39_FPN")
    with pytest.raises(KeyError, match="No published checkpoint named 'condinst/nope'"):
        PathManager.get_local_path("centermask://condinst/nope")
    # Published, but this package has no config (architecture) for it.
    with pytest.raises(FileNotFoundError, match=r"MS_R_50_BiFPN_3x.*has no config file"):
        model_zoo.get_config_file("condinst/MS_R_50_BiFPN_3x")


def test_every_published_model_has_a_url_and_centermask_ones_a_config_file():
    names = model_zoo.list_models()
    assert len(names) == 22
    for name in names:
        assert model_zoo.get_checkpoint_url(name).startswith("https://")
        if name.startswith("centermask/"):
            assert Path(model_zoo.get_config_file(name)).is_file()


def test_get_builds_the_model_with_the_published_weights(server, checkpoint):
    data, state = checkpoint
    server.files[FILE] = data
    model = model_zoo.get(NAME, device="cpu")
    assert not model.training
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    assert server.requests == [f"/{FILE}"]


LITE_39 = "centermask/centermask_lite_V_39_eSE_FPN_ms_4x"


def test_a_zoo_name_as_config_file_gives_its_config_and_published_weights():
    for spelling in (f"centermask://{LITE_39}", "centermask://centermask_lite_V_39_eSE_FPN_ms_4x",
                     LITE_39, f"{LITE_39}.yaml"):  # fmt: skip
        config_file, opts = model_zoo.resolve_config_file(spelling, ["SOLVER.MAX_ITER", "1"])
        assert Path(config_file) == model_zoo.configs_root() / f"{LITE_39}.yaml"
        assert opts == ["MODEL.WEIGHTS", f"centermask://{LITE_39}", "SOLVER.MAX_ITER", "1"]
    config_file, opts = model_zoo.resolve_config_file("condinst/MS_R_50_3x")
    assert config_file.endswith("condinst/MS_R_50_3x.yaml")
    assert opts == ["MODEL.WEIGHTS", "centermask://condinst/MS_R_50_3x"]


def test_an_explicit_model_weights_wins_over_the_published_weights():
    opts = ["MODEL.WEIGHTS", "mine.pth"]
    assert model_zoo.resolve_config_file(f"centermask://{LITE_39}", opts)[1] == opts
    cfg = build_config(Namespace(config_file=f"centermask://{LITE_39}", opts=opts))
    assert cfg.MODEL.WEIGHTS == "mine.pth"
    cfg = build_config(Namespace(config_file=f"centermask://{LITE_39}", opts=[]))
    assert cfg.MODEL.WEIGHTS == f"centermask://{LITE_39}"
    assert cfg.MODEL.VOVNET.CONV_BODY == "V-39-eSE"


def test_paths_stay_paths_and_shipped_configs_without_weights_keep_their_own(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    local = tmp_path / "centermask" / "centermask_lite_V_39_eSE_FPN_ms_4x.yaml"
    local.parent.mkdir()
    local.write_text("MODEL:\n  MASK_ON: True\n")
    relative = f"{LITE_39}.yaml"
    assert model_zoo.resolve_config_file(relative, []) == (relative, [])
    name = "centermask://quickstart/centermask_lite_V_19_slim_dw_eSE_synthetic"
    config_file, opts = model_zoo.resolve_config_file(name, [])
    assert Path(config_file).is_file() and opts == []
    with pytest.raises(FileNotFoundError, match=r"--config-file 'nope\.yaml': no such file"):
        model_zoo.resolve_config_file("nope.yaml")


def test_the_configs_inside_the_package_come_before_the_checkout(tmp_path, monkeypatch):
    packaged = tmp_path / "configs"
    (packaged / "centermask").mkdir(parents=True)
    (packaged / "centermask" / "centermask_lite_V_39_eSE_FPN_ms_4x.yaml").write_text("{}\n")
    checkout = model_zoo.configs_root()
    monkeypatch.setattr(model_zoo.model_zoo, "CONFIGS_ROOTS", (packaged, checkout))
    assert model_zoo.get_config_file(LITE_39) == str(packaged / f"{LITE_39}.yaml")
    monkeypatch.setattr(model_zoo.model_zoo, "CONFIGS_ROOTS", (tmp_path / "none", checkout))
    assert model_zoo.get_config_file(LITE_39) == str(checkout / f"{LITE_39}.yaml")
