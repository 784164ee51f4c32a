"""Batched augmentation: seeded, device-local, bias-preserving by default."""

from __future__ import annotations

import pytest
import torch

from debias.data.augment import AugmentConfig, BatchAugment


def _coloured_batch(n=8):
    x = torch.zeros(n, 3, 28, 28)
    x[:, 0] = 1.0  # red background
    x[:, :, 10:18, 12:16] = 1.0  # a white stroke
    return x


def test_same_generator_same_views_and_different_views_differ():
    aug = BatchAugment(AugmentConfig(crop_padding=2, rotation=10))
    x = _coloured_batch()
    v1 = aug.views(x, 2, torch.Generator().manual_seed(3))
    v2 = aug.views(x, 2, torch.Generator().manual_seed(3))
    assert v1.shape == (8, 2, 3, 28, 28)
    torch.testing.assert_close(v1, v2)
    assert not torch.allclose(v1[:, 0], v1[:, 1])


def test_identity_config_is_identity():
    aug = BatchAugment(AugmentConfig(crop_padding=0, rotation=0, hflip=False))
    x = _coloured_batch()
    torch.testing.assert_close(aug(x, torch.Generator().manual_seed(0)), x)


def test_pure_shift_moves_pixels_by_integers():
    aug = BatchAugment(AugmentConfig(crop_padding=3, rotation=0))
    x = _coloured_batch(16)
    y = aug(x, torch.Generator().manual_seed(1))
    # integer shifts with border replication: values stay exactly 0 or 1 (no interpolation blur)
    assert torch.all((y.abs() < 1e-4) | ((y - 1).abs() < 1e-4))
    # the stroke keeps its area
    assert torch.all(y[:, 1].sum(dim=(1, 2)) >= 8 * 4 - 8 * 3)


def test_background_colour_is_preserved_without_jitter():
    # Border replication keeps the background colour: the bias attribute is not perturbed.
    aug = BatchAugment(AugmentConfig(crop_padding=2, rotation=10))
    y = aug(_coloured_batch(), torch.Generator().manual_seed(0))
    corners = y[:, :, [0, 0, -1, -1], [0, -1, 0, -1]]
    torch.testing.assert_close(corners[:, 0], torch.ones_like(corners[:, 0]))
    torch.testing.assert_close(corners[:, 1:], torch.zeros_like(corners[:, 1:]))


def test_colour_jitter_warns_on_colour_bias_and_changes_colour():
    with pytest.warns(UserWarning, match="perturbs the very shortcut"):
        aug = BatchAugment(
            AugmentConfig(crop_padding=0, rotation=0, colour_jitter=0.8), bias_is_colour=True
        )
    x = _coloured_batch()
    y = aug(x, torch.Generator().manual_seed(0))
    assert y.min() >= 0 and y.max() <= 1
    assert (y[:, :, 0, 0] - x[:, :, 0, 0]).abs().max() > 0.05


def test_hflip_mirrors_some_images():
    aug = BatchAugment(AugmentConfig(crop_padding=0, rotation=0, hflip=True))
    x = torch.rand(64, 3, 8, 8)
    y = aug(x, torch.Generator().manual_seed(0))
    flipped = torch.isclose(y, x.flip(-1), atol=1e-5).flatten(1).all(1)
    same = torch.isclose(y, x, atol=1e-5).flatten(1).all(1)
    assert torch.all(flipped | same) and 10 < flipped.sum() < 54


# -- the published view sets (debias.data.transforms) against torchvision ----------------------
def _rand(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return lambda *shape: torch.rand(*shape, generator=gen)


def _photo(n=6, seed=0):
    return torch.rand(n, 3, 28, 28, generator=torch.Generator().manual_seed(seed))


def test_jitter_draws_are_torchvisions_ranges_and_probability():
    from debias.data.transforms import draw_jitter

    p = draw_jitter(_rand(), 20000, (0.4, 0.4, 0.4, 0.1), 0.8)
    for name in ("brightness", "contrast", "saturation"):
        assert 0.6 <= float(p[name].min()) < 0.61 and 1.39 < float(p[name].max()) <= 1.4
    assert -0.1 <= float(p["hue"].min()) < -0.099 and 0.099 < float(p["hue"].max()) <= 0.1
    assert abs(float(p["apply"].float().mean()) - 0.8) < 0.01  # RandomApply p = 0.8
    # every image has a permutation of the four ops, and all 24 orders occur
    assert torch.equal(p["order"].sort(1).values, torch.arange(4).expand(20000, 4))
    assert len({tuple(r) for r in p["order"].tolist()}) == 24


def test_resized_crop_draws_scale_and_ratio_like_torchvision():
    from debias.data.transforms import draw_resized_crop

    boxes = draw_resized_crop(_rand(1), 5000, 28, 28, (0.2, 1.0))
    top, left, h, w = boxes.unbind(1)
    area = h * w / (28 * 28)
    # rounding of w and h moves the area a little past the drawn fraction
    assert float(area.min()) >= 0.2 - 0.05 and float(area.max()) <= 1.0
    assert float((w / h).min()) >= 3 / 4 - 0.1 and float((w / h).max()) <= 4 / 3 + 0.1
    assert bool(((top >= 0) & (top + h <= 28) & (left >= 0) & (left + w <= 28)).all())
    # torchvision's own draw on the same kind of image lands in the same area distribution
    import torchvision.transforms as tvt

    torch.manual_seed(0)
    tv = torch.tensor(
        [tvt.RandomResizedCrop.get_params(torch.zeros(3, 28, 28), [0.2, 1.0], [3 / 4, 4 / 3])
         for _ in range(5000)], dtype=torch.float,
    )  # fmt: skip
    tv_area = tv[:, 2] * tv[:, 3] / (28 * 28)
    assert abs(float(tv_area.mean()) - float(area.mean())) < 0.02


def test_colour_ops_equal_torchvision_functional_on_fixed_factors():
    import torchvision.transforms.functional as TF

    from debias.data import transforms as T

    x = _photo()
    f = torch.tensor([0.6, 0.8, 1.0, 1.2, 1.4, 0.7])
    hue = torch.tensor([-0.1, -0.05, 0.0, 0.03, 0.1, 0.07])
    for ours, theirs, factors in (
        (T.adjust_brightness, TF.adjust_brightness, f),
        (T.adjust_contrast, TF.adjust_contrast, f),
        (T.adjust_saturation, TF.adjust_saturation, f),
        (T.adjust_hue, TF.adjust_hue, hue),
    ):
        got = ours(x, factors)
        want = torch.stack([theirs(x[i], float(factors[i])) for i in range(len(x))])
        torch.testing.assert_close(got, want, atol=2e-5, rtol=0)  # float rounding only
    gray = T.apply_grayscale(x, torch.tensor([True, False] * 3))
    torch.testing.assert_close(gray[0], TF.rgb_to_grayscale(x[0], 3), atol=1e-6, rtol=0)
    torch.testing.assert_close(gray[1], x[1])


def test_jitter_applies_the_ops_in_each_images_order():
    import torchvision.transforms.functional as TF

    from debias.data import transforms as T

    x = _photo(2)
    params = {
        "apply": torch.tensor([True, True]),
        "order": torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0]]),
        "brightness": torch.tensor([1.3, 1.3]), "contrast": torch.tensor([0.7, 0.7]),
        "saturation": torch.tensor([1.4, 1.4]), "hue": torch.tensor([0.08, 0.08]),
    }  # fmt: skip
    got = T.apply_jitter(x, params)
    fns = [
        lambda im: TF.adjust_brightness(im, 1.3), lambda im: TF.adjust_contrast(im, 0.7),
        lambda im: TF.adjust_saturation(im, 1.4), lambda im: TF.adjust_hue(im, 0.08),
    ]  # fmt: skip
    for i in range(2):
        want = x[i]
        for j in params["order"][i].tolist():
            want = fns[j](want)
        torch.testing.assert_close(got[i], want, atol=1e-5, rtol=0)
    params["apply"] = torch.tensor([False, True])
    torch.testing.assert_close(T.apply_jitter(x, params)[0], x[0])


def test_view_sets_are_the_published_transforms_and_warn_on_colour_bias():
    from debias.data.augment import VIEW_SETS, view_config

    sup = view_config("supcontrast", {})
    assert (sup.resized_crop_scale, sup.hflip, sup.jitter, sup.jitter_p, sup.grayscale_p) == (
        (0.2, 1.0),
        True,
        (0.4, 0.4, 0.4, 0.1),
        0.8,
        0.2,
    )
    bc = view_config("biascon-mnist", {})
    assert (bc.rotation, bc.rotation_fill, bc.interpolation, bc.jitter_p) == (
        20.0, "zeros", "nearest", 0.8
    )  # fmt: skip
    assert view_config("geometry", {"crop_padding": 2, "rotation": 10.0}, 0.4).colour_jitter == 0.4
    with pytest.raises(ValueError, match="applies to views 'geometry' only"):
        view_config("supcontrast", {}, 0.4)
    with pytest.raises(ValueError, match="expected one of geometry, none, supcontrast"):
        view_config("simclr", {})
    assert all(source for _, source in VIEW_SETS.values())
    with pytest.warns(UserWarning, match="perturbs the very shortcut"):
        BatchAugment(sup, bias_is_colour=True)
    x = _coloured_batch(64)
    views = BatchAugment(sup).views(x, 2, torch.Generator().manual_seed(0))
    assert views.shape == (64, 2, 3, 28, 28) and float(views.min()) >= 0 and float(views.max()) <= 1
    # about 20% grey images (all channels equal), as RandomGrayscale(p=0.2)
    grey = (views[:, :, 0] - views[:, :, 1]).abs().amax(dim=(2, 3)) < 1e-6
    assert 0.05 < float(grey.float().mean()) < 0.4


def test_biascon_rotation_fills_black_corners():
    from debias.data.augment import view_config

    cfg = view_config("biascon-mnist", {})
    x = _coloured_batch(32)
    gen = torch.Generator().manual_seed(0)
    # no jitter draws applied: p = 0 keeps the colours, the rotation alone shows its fill
    from dataclasses import replace

    y = BatchAugment(replace(cfg, jitter_p=0.0))(x, gen)
    corner = y[:, :, 0, 0]
    black = (corner.abs().sum(1) < 1e-6).float().mean()
    assert float(black) > 0.5  # torchvision's fill=0; the geometry views replicate the border


# -- the fast path (issue 33) against the path before it ---------------------------------------
def _hue_cases(seed=0):
    """Random colours plus the branch edges of rgb->hsv: grey pixels (max == min), ties of the
    max between channels, black and white, and the Biased-MNIST palette on a white stroke."""
    x = _photo(8, seed)
    x[0] = 0.5  # grey: saturation 0
    x[1, 0], x[1, 1] = 0.9, 0.9  # max shared by R and G
    x[2, 1], x[2, 2] = 0.7, 0.7  # max shared by G and B
    x[3] = 0.0
    x[4] = 1.0
    x[5] = torch.tensor([225, 0, 225]).view(3, 1, 1) / 255.0
    x[5, :, 10:18, 12:16] = 1.0
    return x


def test_fast_hue_is_the_reference_hue_bit_for_bit():
    from debias.data import transforms as T

    x = _hue_cases()
    for shift in (torch.linspace(-0.1, 0.1, 8), torch.tensor([0.5, -0.5, 0.99, 0, 0, 0.25, -1, 1])):
        torch.testing.assert_close(
            T.adjust_hue(x, shift), T.adjust_hue_reference(x, shift), atol=1e-6, rtol=0
        )  # measured equal bit for bit; the tolerance allows another CPU's rounding
        assert torch.equal(T.adjust_hue(x, shift), T.adjust_hue_reference(x, shift))


def test_fast_jitter_is_the_reference_jitter_on_drawn_parameters():
    from debias.data import transforms as T

    x = torch.cat([_hue_cases(0), _photo(56, 1)])
    params = T.draw_jitter(_rand(4), 64, (0.4, 0.4, 0.4, 0.1), 0.8)
    assert 0 < int(params["apply"].sum()) < 64  # some rows jittered, some left alone
    fast, ref = T.apply_jitter(x, params), T.apply_jitter_reference(x, params)
    torch.testing.assert_close(fast, ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(fast[~params["apply"]], x[~params["apply"]], atol=0, rtol=0)
    assert not torch.equal(fast, x)
    snapshot = x.clone()
    T.apply_jitter(x, params)
    assert torch.equal(x, snapshot)  # the input is not modified in place


@pytest.mark.parametrize("views", ["supcontrast", "biascon-mnist", "none", "geometry"])
def test_fast_views_are_the_reference_views_from_the_same_generator(views):
    from debias.data.augment import view_config

    cfg = view_config(views, {"crop_padding": 2, "rotation": 10.0}, 0.0)
    x = torch.cat([_coloured_batch(16), _photo(16, 2)])
    g_fast, g_ref = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    fast = BatchAugment(cfg).view_major(x, 2, g_fast)
    ref = BatchAugment(cfg, reference=True).view_major(x, 2, g_ref)
    assert fast.shape == (64, 3, 28, 28)
    torch.testing.assert_close(fast, ref, atol=1e-6, rtol=0)
    # the same draws consumed: the next batch's views agree too
    assert torch.equal(g_fast.get_state(), g_ref.get_state())
    # view-major rows: view v of image i is row v*B + i, each view as one call would make it
    one = BatchAugment(cfg)
    g = torch.Generator().manual_seed(7)
    torch.testing.assert_close(fast, torch.cat([one(x, g), one(x, g)]), atol=1e-6, rtol=0)
    if views != "none":
        assert not torch.allclose(fast[:32], fast[32:])


def test_geometry_colour_jitter_views_match_the_reference_path():
    cfg = AugmentConfig(crop_padding=2, rotation=10.0, hflip=True, colour_jitter=0.4)
    x = _photo(32, 3)
    fast = BatchAugment(cfg).view_major(x, 3, torch.Generator().manual_seed(1))
    ref = BatchAugment(cfg, reference=True).view_major(x, 3, torch.Generator().manual_seed(1))
    torch.testing.assert_close(fast, ref, atol=1e-6, rtol=0)
    assert (fast - x.repeat(3, 1, 1, 1)).abs().amax() > 0.05
