"""sc-imagenet: build SC-ImageNet, a semantic-correspondence pre-training set mined from
category-labelled images (Huang et al., ICCV 2023)."""

__version__ = "0.1.0"
