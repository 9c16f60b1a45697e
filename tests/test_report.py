"""Tests for the self-contained HTML report and case selection."""

import base64
import io
import re

import numpy as np
import pytest
from PIL import Image

from pixelwise.evaluate.report import ReportCase, ReportInputs, read_training_csv, select_cases, write_report
from pixelwise.metrics import image_metrics, summarize

H, W = 48, 64


def _rows_and_cases(n=8):
    yy, xx = np.mgrid[:H, :W]
    truth = ((yy - 24) / 14) ** 2 + ((xx - 32) / 20) ** 2 <= 1
    rows, cases = [], {}
    for index in range(n):
        pred = np.roll(truth, 2 * index, axis=1)
        image = np.full((H, W, 3), 200, np.uint8)
        image[truth] = (120, 80, 90)
        image_id = f"case<{index}>"  # angle brackets: must be escaped in the HTML
        row = {"id": image_id, **image_metrics(pred, truth)}
        rows.append(row)
        cases[image_id] = ReportCase(image_id, image, truth, pred, row["dice"])
    return rows, cases


def _embedded_pngs(text):
    return [
        Image.open(io.BytesIO(base64.b64decode(data)))
        for data in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", text)
    ]


def test_select_cases_ranks_without_repeats():
    rows = [{"id": f"i{k}", "dice": d} for k, d in enumerate([0.9, 0.1, 0.5, 0.7, 0.3, 0.95, 0.6, float("nan"), 0.2])]
    chosen = select_cases(rows, n_each=2)
    assert chosen["best"] == ["i5", "i0"]
    assert chosen["worst"] == ["i1", "i8"]
    assert chosen["median"] == ["i2", "i6"]  # ranks 3 and 4 of the 8 scored images
    few = select_cases(rows[:4], n_each=3)
    ids = few["best"] + few["median"] + few["worst"]
    assert len(ids) == len(set(ids)) == 4  # no image shown twice


def test_report_is_self_contained_and_shows_the_numbers(tmp_path):
    rows, cases = _rows_and_cases()
    shown = [cases[i] for ids in select_cases(rows, n_each=2).values() for i in ids]
    training = tmp_path / "metrics.csv"
    training.write_text(
        "epoch,train_loss,val_loss,val_dice,lr,seconds\n1,0.9,1.0,0.5,0.001,2\n2,0.6,0.7,0.7,0.0005,2\n"
    )
    sweep = [{"threshold": t, "dice": 0.8 - abs(t - 0.45), "jaccard": 0.7 - abs(t - 0.45)} for t in (0.3, 0.45, 0.6)]
    labels = {row["id"]: ("melanoma" if k < 3 else "common nevus") for k, row in enumerate(rows)}
    counts = {row["id"]: (2 if k == 0 else 1) for k, row in enumerate(rows)}
    summary = {**summarize(rows), "data": "/data/PH2", "split": "test"}
    path = write_report(
        tmp_path / "out" / "report.html",
        ReportInputs(
            title="eval <demo>",
            summary=summary,
            rows=rows,
            cases=shown,
            training_csv=training,
            threshold_sweep=sweep,
            chosen_threshold=0.45,
            label_of=labels,
            instance_counts=counts,
        ),
    )
    text = path.read_text()
    assert "<script" not in text and "http://" not in text and "https://" not in text
    assert "eval &lt;demo&gt;" in text and "case&lt;0&gt;" in text and "case<0>" not in text
    # training curves, Dice histogram, cases grid, threshold sweep, instances: five valid PNGs
    pngs = _embedded_pngs(text)
    assert len(pngs) == 5 and all(png.size[0] > 100 for png in pngs)
    assert "<b>0.45</b>" in text
    assert f"{summary['mean']['dice']:.4f}" in text and f"{summary['pooled_dice']:.4f}" in text
    melanoma = summarize(rows[:3])["mean"]["dice"]
    assert re.search(rf"<td>melanoma</td><td>3</td><td>{melanoma:.4f}</td>", text)
    assert re.search(r"<td>case&lt;0&gt;</td><td>melanoma</td>.*<td>2</td></tr>", text)


def test_cases_grid_draws_green_truth_and_red_prediction(tmp_path):
    rows, cases = _rows_and_cases(3)
    path = write_report(
        tmp_path / "r.html",
        ReportInputs(
            title="t",
            summary=summarize(rows),
            rows=rows,
            cases=list(cases.values()),
            training_csv=None,
            threshold_sweep=None,
            chosen_threshold=None,
            label_of=None,
            instance_counts=None,
        ),
    )
    pngs = _embedded_pngs(path.read_text())
    assert len(pngs) == 2  # histogram + cases only
    grid = np.asarray(pngs[1].convert("RGB")).astype(int)
    green = (grid[..., 1] > 150) & (grid[..., 0] < 80) & (grid[..., 2] < 80)
    red = (grid[..., 0] > 180) & (grid[..., 1] < 80) & (grid[..., 2] < 80)
    assert green.sum() > 100 and red.sum() > 100


def test_partial_training_log_and_missing_distances(tmp_path):
    training = tmp_path / "metrics.csv"
    training.write_text("epoch,train_loss,phase\n1,0.9,warmup\n2,0.5,main\n")
    assert read_training_csv(training) == {"epoch": [1.0, 2.0], "train_loss": [0.9, 0.5]}
    rows = [{"id": "a", **image_metrics(np.zeros((8, 8), bool), np.zeros((8, 8), bool))}]
    path = write_report(
        tmp_path / "r.html",
        ReportInputs(
            title="t",
            summary=summarize(rows),
            rows=rows,
            cases=[],
            training_csv=training,
            threshold_sweep=None,
            chosen_threshold=None,
            label_of=None,
            instance_counts=None,
        ),
    )
    text = path.read_text()
    assert len(_embedded_pngs(text)) == 2  # loss curve + histogram
    assert re.search(r"<td>HD95 \(px\)</td><td>–</td>.*<td>1</td></tr>", text)  # missing, counted, not 0


@pytest.mark.parametrize("n_each", [1, 3])
def test_select_cases_sizes(n_each):
    rows = [{"id": str(k), "dice": k / 20} for k in range(20)]
    chosen = select_cases(rows, n_each=n_each)
    assert all(len(ids) == n_each for ids in chosen.values())
    assert chosen["worst"][0] == "0" and chosen["best"][0] == "19"
    assert chosen["median"][0] in {"9", "10"} or n_each > 1 and "10" in chosen["median"]


def test_multiclass_sections_show_class_colours_table_and_heat_map(tmp_path):
    from pixelwise.data.classes import IGNORE
    from pixelwise.evaluate.report import ClassCase
    from pixelwise.metrics import class_summary, confusion_matrix

    rows, cases = _rows_and_cases(3)
    names, colors = ["sky", "road <main>", "car"], [(128, 128, 128), (128, 64, 128), (64, 0, 128)]
    truth = np.zeros((H, W), np.uint8)
    truth[10:30, 10:40] = 1
    truth[30:40, 20:30] = 2
    truth[-4:] = IGNORE
    pred = np.roll(truth, 3, axis=1)
    pred[-4:] = 0
    multiclass = class_summary(confusion_matrix(pred, truth, 3), names)
    image = np.full((H, W, 3), 200, np.uint8)
    class_cases = [
        ClassCase(1, "img<1>", image, truth, pred, multiclass["per_class"][1]["iou"]),
        ClassCase(2, "img<1>", image, truth, pred, multiclass["per_class"][2]["iou"]),
    ]
    path = write_report(
        tmp_path / "r.html",
        ReportInputs(
            title="t",
            summary=summarize(rows),
            rows=rows,
            cases=[],
            multiclass=multiclass,
            class_colors=colors,
            class_cases=class_cases,
        ),
    )
    text = path.read_text()
    assert "road &lt;main&gt;" in text and "road <main>" not in text
    assert "background:#804080" in text  # road's swatch
    assert f"<td>{multiclass['per_class'][1]['iou']:.4f}</td>" in text
    assert "pooled Dice (all pixels" not in text
    pngs = _embedded_pngs(text)
    assert len(pngs) == 3  # heat map, histogram, class cases
    class_maps = np.asarray(pngs[2].convert("RGB")).reshape(-1, 3)
    for colour in (colors[1], colors[2], (224, 224, 192)):  # classes filled with their colours, void shown
        assert (np.abs(class_maps.astype(int) - colour).sum(axis=1) <= 3).sum() > 50, colour


def test_training_curve_rings_the_kept_epoch_next_to_the_best():
    from pixelwise.evaluate.report import training_curves_figure

    columns = {"epoch": [1.0, 2.0, 3.0], "val_dice": [0.5, 0.9, 0.8], "lr": [1e-3, 5e-4, 0.0]}

    def legend(kept_epoch):
        figure = training_curves_figure(columns, kept_epoch)
        dice_axes = next(ax for ax in figure.axes if ax.get_title() == "validation Dice")
        return [text.get_text() for text in dice_axes.get_legend().get_texts()]

    assert legend(3) == ["best 0.9000 (epoch 2)", "kept 0.8000 (epoch 3)"]
    assert legend(None) == ["best 0.9000 (epoch 2)"]
    assert legend(7) == ["best 0.9000 (epoch 2)"]  # an epoch the log does not hold is not drawn
