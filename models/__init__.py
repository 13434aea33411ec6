"""Model code and inference backends: BiRefNet (RMBG-2.0) in PyTorch, U2-Net on ONNX."""
