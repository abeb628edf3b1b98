"""Runs tracked in MLflow (file store) and TensorBoard, read back with their own readers."""

from __future__ import annotations

import json
import socket

import pytest

mlflow = pytest.importorskip("mlflow")
pytest.importorskip("tensorboard")


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    """One run from a config to saved models with sockets disabled: a timm backbone from a local
    weights file, tracked to a local MLflow file store and TensorBoard (none of it needs a network)."""
    timm = pytest.importorskip("timm")
    import torch
    from safetensors.torch import save_file

    from shiftkit.adapt.job.config import parse_config
    from shiftkit.adapt.job.pipeline import run

    root = tmp_path_factory.mktemp("tracked")
    torch.manual_seed(0)
    net = timm.create_model("resnet10t", num_classes=1000)  # ImageNet layout, random init
    weights = root / "imagenet.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights))

    def refuse(*a, **k):
        raise OSError("network access in a test")

    raw = {"name": "tracked", "out_dir": str(root / "runs"), "methods": ["source_only"], "progress": False,
           "data": {"benchmark": "radiograph", "n_per_domain": 40, "image_size": 32},
           "model": {"backbone": "timm:resnet10t", "weights": str(weights)}, "train": {"epochs": 2, "batch_size": 16},
           "evaluation": {"n_permutations": 50, "max_gap_points": 50},
           "tracking": {"mlflow": (root / "mlruns").as_uri(), "experiment": "test-exp",
                        "tensorboard": str(root / "tb")}}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket, "socket", refuse)
        result = run(parse_config(raw))
    return root, result


def test_config_to_saved_model_without_network(tracked_run) -> None:
    import timm

    from shiftkit.adapt import load

    root, result = tracked_run
    pred = load(result.run_dir / "models" / "source_only")
    assert pred.sidecar["architecture"]["name"] == "timm:resnet10t" and pred.sidecar["architecture"]["in_channels"] == 1
    cfg = timm.data.resolve_data_config({}, model=timm.create_model("resnet10t"))  # timm's pretrained config
    norm = pred.sidecar["preprocessing"]["normalize"]
    assert norm["input_size"] == [1, *cfg["input_size"][1:]]
    assert norm["mean"] == [pytest.approx(sum(cfg["mean"]) / 3)]


def test_mlflow_run_holds_params_epoch_metrics_and_report(tracked_run) -> None:
    root, result = tracked_run
    client = mlflow.MlflowClient(tracking_uri=(root / "mlruns").as_uri())
    exp = client.get_experiment_by_name("test-exp")
    (r,) = client.search_runs([exp.experiment_id])
    assert r.info.status == "FINISHED" and r.info.run_name == "tracked"
    assert r.data.params["model.backbone"] == "timm:resnet10t" and r.data.params["train.epochs"] == "2"
    history = result.histories["source_only"]
    got = client.get_metric_history(r.info.run_id, "source_only/train_loss")
    assert [m.step for m in got] == [1, 2]
    assert [m.value for m in got] == pytest.approx([h["train_loss"] for h in history])
    live = client.get_metric_history(r.info.run_id, "source_only/target_auroc")  # from the epoch callback
    assert [m.value for m in live] == pytest.approx([h["target_auroc"] for h in history])
    final = json.loads((result.run_dir / "metrics.json").read_text())
    auroc = final["methods"]["source_only"]["target"]["auroc"]
    assert r.data.metrics["methods/source_only/target/auroc"] == pytest.approx(auroc)
    names = {a.path for a in client.list_artifacts(r.info.run_id)}
    assert {"report.html", "metrics.json", "models"} <= names


def test_tensorboard_events_read_back(tracked_run) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root, result = tracked_run
    acc = EventAccumulator(str(root / "tb" / "tracked"))
    acc.Reload()
    events = acc.Scalars("source_only/train_loss")
    assert [e.step for e in events] == [1, 2]
    assert [e.value for e in events] == pytest.approx([h["train_loss"] for h in result.histories["source_only"]])
    assert "config/text_summary" in acc.Tags()["tensors"]


def test_tracking_off_by_default_and_clear_error_without_sqlalchemy(tmp_path) -> None:
    from shiftkit.adapt.job.config import RunConfig
    from shiftkit.adapt.training.tracking import Tracker, tracker
    from shiftkit.datasets.errors import ConfigError

    with tracker(RunConfig().tracking, "x") as t:
        assert t is None
    try:
        import sqlalchemy  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="sqlalchemy"):
            Tracker("x", mlflow_uri=f"sqlite:///{tmp_path}/m.db")


def test_benchmark_cells_logged_one_run_each(tmp_path) -> None:
    from shiftkit.adapt.harness.efficacy import Cell
    from shiftkit.adapt.training.tracking import log_benchmark

    cell = {"method": "dann", "benchmark": "radiograph", "seed": 100}
    js = Cell(**cell).paths(tmp_path)[0]
    js.parent.mkdir(parents=True)
    result = {"cell": cell, "spec": {"epochs": 2}, "quick": True, "model_seed": 0, "metric": "auroc",
              "target": 0.7, "source": 0.9, "proxy_a_distance": 1.2, "seconds": 3.0,
              "history": [{"epoch": 1, "train_loss": 0.9}, {"epoch": 2, "train_loss": 0.6}]}
    js.write_text(json.dumps(result))
    (tmp_path / "table.md").write_text("| method |\n")
    uri = (tmp_path / "mlruns").as_uri()
    assert log_benchmark([result], tmp_path, mlflow_uri=uri, experiment="bench", table=True) == 1
    client = mlflow.MlflowClient(tracking_uri=uri)
    runs = {r.info.run_name: r for r in client.search_runs([client.get_experiment_by_name("bench").experiment_id])}
    assert set(runs) == {"radiograph-dann-seed100", "summary"}
    r = runs["radiograph-dann-seed100"]
    assert r.data.params["cell.seed"] == "100" and r.data.metrics["target"] == pytest.approx(0.7)
    assert [m.value for m in client.get_metric_history(r.info.run_id, "dann/train_loss")] == [0.9, 0.6]
    assert [a.path for a in client.list_artifacts(r.info.run_id)] == [js.name]
    assert [a.path for a in client.list_artifacts(runs["summary"].info.run_id)] == ["table.md"]
