"""The harmful-answer check (output phase): the harm detector of the guidelines check, calibrated on answers,
applied to what the model wrote."""
