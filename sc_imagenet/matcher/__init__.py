"""A reference supervised matcher in the CATs family: a consumer of the SC-ImageNet release (docs/matcher.md).

The generator (`sc_imagenet.matching`) makes the pseudo-labels; this package learns from them, as the
paper's CATs, DHPF and VAT students do, so that a release can be judged by what it teaches.

    settings.py      MatcherConfig (architecture), PretrainSettings (training) — pydantic only
    functional.py    frames, cost volume, mutual filter, soft-argmax flow, end-point error (pure)
    features.py      SmallCNN (trained from scratch) or a frozen registry backbone; the learned projection
    aggregation.py   centre-pivot 4-D smoothing, CATs' cost transformer with swapping passes
    model.py         MatcherNet: images → flow
    checkpoint.py    matcher.pt: save, read, load_matcher
    predictor.py     Matcher / matcher_transfer: the `matcher` evaluation method
    augment.py       CATs' training augmentations (seeded)
    data.py          training pairs from a release or a benchmark's split, tensors, the step → batch order
    pretrain.py      pretrain(): resumable training, Parquet log
    command.py       `sc-imagenet pretrain`

This `__init__` imports nothing: `sc_imagenet.evaluate` loads `predictor` to register the `matcher` method,
and `data` reads benchmarks through `sc_imagenet.evaluate`, so a package-level import of `data` here would
close an import cycle.
"""
