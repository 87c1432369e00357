"""Flow-matching objectives and samplers shared by the flow-based models."""
