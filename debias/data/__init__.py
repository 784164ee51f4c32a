from debias.data.biased_mnist import PALETTES, ColouredMNIST, biased_mnist, colour_bias
from debias.data.biased_mnist import SPLITS as BIASED_MNIST_SPLITS
from debias.data.cache import cache_info, clear_cache, load_images
from debias.data.celeba import CelebA
from debias.data.digits import digits_splits, load_digits_28
from debias.data.metadata import MetadataDataset
from debias.data.mnist import load_mnist
from debias.data.utkface import UTKFace

__all__ = [
    "BIASED_MNIST_SPLITS",
    "CelebA",
    "ColouredMNIST",
    "MetadataDataset",
    "PALETTES",
    "UTKFace",
    "biased_mnist",
    "cache_info",
    "clear_cache",
    "colour_bias",
    "digits_splits",
    "load_digits_28",
    "load_images",
    "load_mnist",
]
