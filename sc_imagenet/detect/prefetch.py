"""Decode images in threads, ahead of the model, in batches.

PIL releases the GIL while decoding, so a few threads keep a GPU fed; a bounded window of
`prefetch` batches in flight keeps memory at batch × prefetch images however long the list is.
A file that fails to decode becomes a `DecodedImage` with an error, never an exception: the rest
of its batch goes on.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from sc_imagenet.detect.types import DecodedImage
from sc_imagenet.io.images import load_rgb
from sc_imagenet.io.parallel import ordered_map


def _decode(root: Path, image_id: str, rel_path: str, max_pixels: int | None) -> DecodedImage:
    try:
        return DecodedImage(image_id, rel_path, load_rgb(root / rel_path, max_pixels))
    except Exception as exc:
        return DecodedImage(image_id, rel_path, None, f"{type(exc).__name__}: {exc}"[:300])


def iter_decoded_batches(
    root: Path,
    items: Sequence[tuple[str, str]],
    batch_size: int,
    workers: int = 4,
    prefetch: int = 2,
    max_pixels: int | None = None,
) -> Iterator[list[DecodedImage]]:
    """items: (image_id, rel_path) pairs. Yields lists of at most `batch_size` decoded images, in order."""
    # prefetch + 1 batches of images in flight, as many as the model's batch and the ones decoded ahead of it
    decoded = ordered_map(lambda item: _decode(root, item[0], item[1], max_pixels), items, workers,
                          window=max(1, batch_size) * (prefetch + 1))
    batch: list[DecodedImage] = []
    for image in decoded:
        batch.append(image)
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch
