"""The dataset half of the method (paper §3.4–3.5), as pure functions on arrays: the per-category pair
graph, closed-loop consistency over stored flows, selection, quality against ground truth, and the
SC-ImageNet layout. The stages `label`, `consistency`, `select` and `export` wire them to manifests."""
