"""Reports from the results store: quality tables (mean +- 95% CI over seeds), speed and Pareto tables, plots,
sample grids and the claims report, as Markdown, self-contained HTML, CSV and LaTeX (booktabs).

Reads only `genlib.store`; never trains, samples or times anything. Entry points: `build_report`,
`build_claims`, `CLAIMS` (the ten claims with their tests and verdict rules) and `genbench report`.
"""
from reports.build import CLAIMS_FORMATS, FORMATS, build_claims, build_report
from reports.claims import CLAIMS, AnalyticCheck, Claim, ClaimResult, Comparison, evaluate_claims
from reports.load import ReportError, StoreData, open_store

__all__ = ["CLAIMS", "CLAIMS_FORMATS", "FORMATS", "AnalyticCheck", "Claim", "ClaimResult", "Comparison", "ReportError",
           "StoreData", "build_claims", "build_report", "evaluate_claims", "open_store"]
