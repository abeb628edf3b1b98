"""Networks: MONAI, timm, torchvision and segmentation-models-pytorch backbones in the split protocol."""
