"""The standard semantic-correspondence benchmarks (PF-WILLOW, PF-PASCAL, SPair-71k) and the synthetic
data, read from folders the user downloaded, and scored with any registered evaluation method.

    from sc_imagenet.evaluate.benchmarks import BENCHMARKS, load_benchmark, score_benchmark
    bench = load_benchmark("spair", "/data/SPair-71k", split="test", limit=100)
    result, rows = score_benchmark(method, bench)

`sc-imagenet eval` is the command line (docs/evaluate.md, "Standard benchmarks"). Loaders register
themselves in `BENCHMARKS` (a `sc_imagenet.registry.Registry` of `BenchmarkSpec`) on import.
"""

from sc_imagenet.evaluate.benchmarks import pfpascal, pfwillow, spair, synthetic  # noqa: F401  (register)
from sc_imagenet.evaluate.benchmarks.base import (
    BENCHMARKS,
    Benchmark,
    BenchmarkError,
    BenchmarkPair,
    BenchmarkSpec,
    load_benchmark,
    register_benchmark,
)
from sc_imagenet.evaluate.benchmarks.score import (
    DEFAULT_ALPHAS,
    PREDICTION_COLUMNS,
    format_results,
    score_benchmark,
    write_predictions,
)

__all__ = [
    "BENCHMARKS",
    "DEFAULT_ALPHAS",
    "PREDICTION_COLUMNS",
    "Benchmark",
    "BenchmarkError",
    "BenchmarkPair",
    "BenchmarkSpec",
    "format_results",
    "load_benchmark",
    "register_benchmark",
    "score_benchmark",
    "write_predictions",
]
