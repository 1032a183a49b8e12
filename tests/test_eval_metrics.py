"""Each evaluation metric against an independent computation: numpy formulas, closed forms, hand-made inputs whose
answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from armkit.recipes.evaluation.metrics import (
    CodeHistogram,
    balanced_top1,
    code_perplexity,
    codebook_usage,
    retrieval_r1,
    topk_correct,
)
from armkit.recipes.evaluation.protocol import Protocol, ProtocolError
from armkit.recipes.evaluation.reconstruction import ReconstructionMetrics, make_fid, make_lpips
from armkit.recipes.evaluation.zeroshot import class_names, text_classifier


def recon_metrics() -> ReconstructionMetrics:
    return ReconstructionMetrics(image_size=(16, 16))


# -- PSNR / SSIM ----------------------------------------------------------------------------------------------------
def test_psnr_is_the_mean_of_per_image_numpy_psnr():
    gen = torch.Generator().manual_seed(0)
    target = torch.rand(5, 3, 16, 16, generator=gen)
    noise = torch.randn(5, 3, 16, 16, generator=gen) * torch.tensor([0.01, 0.03, 0.1, 0.2, 0.4]).view(5, 1, 1, 1)
    recon = (target + noise).clamp(0, 1)
    m = recon_metrics()
    m.update(recon[:2], target[:2])  # two batches: the mean is over images, not over batches
    m.update(recon[2:], target[2:])
    x, y = recon.double().numpy(), target.double().numpy()
    mse = ((x - y) ** 2).reshape(5, -1).mean(axis=1)
    want = float(np.mean(10 * np.log10(1.0 / mse)))
    pooled = float(10 * np.log10(1.0 / mse.mean()))  # what a pooled-MSE PSNR would give instead
    got = m.compute()["psnr"]
    assert got == pytest.approx(want, abs=1e-4)
    assert abs(got - pooled) > 0.5


def test_ssim_of_identical_images_is_one_and_of_flat_images_has_the_closed_form():
    m = recon_metrics()
    image = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    m.update(image, image)
    assert m.compute()["ssim"] == pytest.approx(1.0, abs=1e-5)
    # Flat images a and b: variances and covariance vanish, SSIM = (2ab + C1) / (a^2 + b^2 + C1), C1 = (0.01 * 1)^2.
    m = recon_metrics()
    pairs = [(0.2, 0.5), (0.9, 0.3)]
    recon = torch.stack([torch.full((3, 16, 16), a) for a, _ in pairs])
    target = torch.stack([torch.full((3, 16, 16), b) for _, b in pairs])
    m.update(recon, target)
    c1 = 0.01 ** 2
    want = np.mean([(2 * a * b + c1) / (a * a + b * b + c1) for a, b in pairs])
    assert m.compute()["ssim"] == pytest.approx(want, abs=1e-4)


def test_ssim_falls_as_noise_grows():
    gen = torch.Generator().manual_seed(2)
    image = torch.rand(1, 3, 32, 32, generator=gen)
    values = []
    for sigma in (0.02, 0.1, 0.3):
        m = recon_metrics()
        m.update((image + sigma * torch.randn(image.shape, generator=gen)).clamp(0, 1), image)
        values.append(m.compute()["ssim"])
    assert values[0] > values[1] > values[2]


# -- codebook statistics ----------------------------------------------------------------------------------------------
def test_usage_and_perplexity_on_hand_made_indices():
    hist = CodeHistogram(8)
    hist.update(torch.tensor([[0, 0, 1, 1]]))
    hist.update(torch.tensor([[2, 2], [2, 2]]))  # counts 2, 2, 4 over codes 0, 1, 2
    assert hist.tokens == 8
    assert codebook_usage(hist.counts) == pytest.approx(3 / 8)
    assert code_perplexity(hist.counts) == pytest.approx(2 ** 1.5)  # H = 1.5 bits
    uniform = torch.bincount(torch.arange(15) % 5, minlength=10)  # 5 codes, equally often
    assert code_perplexity(uniform) == pytest.approx(5.0)
    assert codebook_usage(uniform) == pytest.approx(0.5)
    assert code_perplexity(torch.tensor([0, 7, 0])) == pytest.approx(1.0)


def test_histogram_refuses_out_of_range_codes():
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        CodeHistogram(4).update(torch.tensor([1, 4]))


# -- zero-shot and retrieval ------------------------------------------------------------------------------------------
def test_topk_correct_on_hand_made_scores():
    scores = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5], [0.4, 0.35, 0.25]])
    labels = torch.tensor([0, 1, 2])
    assert topk_correct(scores, labels, 1) == 1  # only row 0
    assert topk_correct(scores, labels, 2) == 2  # row 1's label is second
    assert topk_correct(scores, labels, 3) == 3


def test_balanced_top1_averages_per_class_recall():
    labels = torch.tensor([0, 0, 0, 0, 1])  # unbalanced: four of class 0, one of class 1
    always_zero = torch.tensor([[1.0, 0.0]] * 5)
    assert topk_correct(always_zero, labels, 1) == 4  # 80% plain accuracy for a constant guess
    assert balanced_top1(always_zero, labels) == pytest.approx(0.5)  # (1 + 0) / 2
    scores = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert balanced_top1(scores, labels) == pytest.approx((3 / 4 + 1) / 2)


def test_retrieval_r1_counts_identical_texts_as_correct():
    texts = ["cat", "dog", "cat", "bird"]
    sim = torch.tensor([[0.9, 0.1, 0.2, 0.0],  # image 0 -> text 0: correct
                        [0.1, 0.2, 0.8, 0.0],  # image 1 (dog) -> text 2 (cat): wrong
                        [0.7, 0.1, 0.3, 0.0],  # image 2 (cat) -> text 0 (also "cat"): correct
                        [0.0, 0.9, 0.0, 0.1]])  # image 3 (bird) -> text 1 (dog): wrong
    assert retrieval_r1(sim, texts, texts) == pytest.approx(0.5)
    assert retrieval_r1(sim.T, texts, texts) == pytest.approx(0.5)  # text->image: texts 0, 2 right; 1, 3 wrong


def test_text_classifier_averages_normalised_template_embeddings():
    table = {"a red.": [3.0, 0.0], "red": [1.0, 1.0], "a blue.": [0.0, 2.0], "blue": [0.0, 5.0]}

    def embed(texts):
        return torch.tensor([table[t] for t in texts])

    got = text_classifier(embed, ["red", "blue"], ["a {}.", "{}"])
    red = np.array([1.0, 0.0]) + np.array([1.0, 1.0]) / math.sqrt(2)  # mean of unit vectors (x2), renormalised
    assert got[0].numpy() == pytest.approx(red / np.linalg.norm(red), abs=1e-6)
    assert got[1].numpy() == pytest.approx([0.0, 1.0], abs=1e-6)


def test_zero_shot_on_hand_made_embeddings_ignores_unlabelled_samples():
    from armkit.recipes.evaluation.evaluate import zero_shot

    class Heads:  # stands in for SigmoidLoss: "red" -> x axis, "green" -> y axis, whatever the template
        @staticmethod
        def text_embedding(texts):
            return torch.tensor([[1.0, 0.0] if "red" in t else [0.0, 1.0] for t in texts])

    image = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.1, 0.9]])
    labels = torch.tensor([0, 1, 1, -1])  # the third is misclassified, the fourth has no label
    metrics, skipped = {}, {}
    record = zero_shot(Heads().text_embedding, image, labels, ["red", "green"], Protocol(), metrics, skipped)
    assert metrics["zeroshot_top1"] == pytest.approx(100 * 2 / 3)
    assert metrics["zeroshot_top1_balanced"] == pytest.approx(100 * (1 + 1 / 2) / 2)  # red 1/1, green 1/2
    assert record["labelled"] == 3 and record["chance_top1"] == 50.0
    assert record["majority_top1"] == pytest.approx(100 * 2 / 3)  # two of the three labelled are "green"
    assert "only 2 classes" in skipped["zeroshot_top5"]


def test_class_names_come_from_the_flag_then_meta_json():
    assert class_names({"classes": ["a", "b"]}, ["x"]) == (["x"], "given (--classes)")
    assert class_names({"classes": ["a", "b"]}) == (["a", "b"], "meta.json")
    names, why = class_names(None)
    assert names is None and "--classes" in why


# -- LPIPS / rFID: local files only -----------------------------------------------------------------------------------
def test_lpips_and_fid_are_skipped_without_local_weights():
    lpips, record = make_lpips("alex", None, (64, 64))
    assert lpips is None and "never downloads" in record["skipped"]
    fid, record = make_fid(None)
    assert fid is None and "never downloads" in record["skipped"]


def test_lpips_reads_the_given_backbone_file_and_downloads_nothing(tmp_path, monkeypatch):
    import torchvision
    from safetensors.torch import save_file

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url",
                        lambda *a, **k: pytest.fail("LPIPS tried to download its backbone"))
    backbone = torchvision.models.alexnet(weights=None)
    path = tmp_path / "alexnet.safetensors"
    save_file({k: v.contiguous() for k, v in backbone.state_dict().items()}, str(path))
    metric, record = make_lpips("alex", path, (64, 64))
    assert torch.equal(metric.net.net.slice1[0].weight, backbone.features[0].weight)  # the file's tensors
    assert record["is_torchvision_published_file"] is False  # not torchvision's published file: said so
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    metric.update(x, x)
    assert float(metric.compute()) == pytest.approx(0.0, abs=1e-6)
    assert "get_state_dict" not in torchvision.models.AlexNet_Weights.__dict__  # the redirection is undone


# -- protocol ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad, match", [({"templates": ["no slot"]}, "exactly one"), ({"sampler": "dpm"}, "sampler"),
                                        ({"limit": 0}, "limit"), ({"stepz": 3}, "unknown key")])
def test_protocol_rejects_bad_settings(bad, match):
    with pytest.raises(ProtocolError, match=match):
        Protocol.from_mapping(bad)
