"""How the pool learns what its members can do: calibration (measured priors per task class) and DREAM
(distilling a trusted teacher into a cheaper student), whose weights are reapplied when the pool opens."""
