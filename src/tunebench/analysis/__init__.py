"""From run tables to verdicts: run metrics (aggregate), tests and intervals (stats), the best
arm of a set on selection seeds (select), contrasts and verdicts (judge), the verdict code
on simulated A/A data (calibration). Imports the layers below."""
