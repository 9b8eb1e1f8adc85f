"""Farm models on the device: feature extraction, the irrigation advisor and the sensor-fault monitor."""
