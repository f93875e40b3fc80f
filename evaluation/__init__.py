"""Evaluation tail tasks: Physics-IQ and VBench-I2V metric code."""
