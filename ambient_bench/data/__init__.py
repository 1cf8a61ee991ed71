"""Image conversions and the clean/corrupted mixing of datasets."""
