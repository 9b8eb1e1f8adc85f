"""On-edge inference: LiteRT/TFLite runtime, model registry, camera and farm pipelines."""
