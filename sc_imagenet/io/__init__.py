"""Files on disk: manifests, images, locks. No algorithms live here."""
