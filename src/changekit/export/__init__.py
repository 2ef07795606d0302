"""Exporting trained models for other runtimes (ONNX) and running those exports through the scene pipeline."""
