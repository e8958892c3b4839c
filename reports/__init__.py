"""Reports from the results store: quality tables (mean +- 95% CI over seeds), speed and Pareto tables, plots,
sample grids and the claims report, as Markdown, self-contained HTML, CSV and LaTeX (booktabs).

Reads only `genlib.store`; never trains, samples or times anything. Entry points: `build_report`,
`build_claims`, `evaluate_claims` (each stored study's claims and the analytic checks) and `genbench report`.
"""
from __future__ import annotations

from genlib import lazy

# Loaded on first use (PEP 562), so that `genbench --help` imports no torch or pandas.
_EXPORTS = {
    "CLAIMS_FORMATS": "reports.build",
    "FORMATS": "reports.build",
    "build_claims": "reports.build",
    "build_report": "reports.build",
    "ANALYTIC_CLAIMS": "reports.claims",
    "claims_in_store": "reports.claims",
    "AnalyticCheck": "reports.claims",
    "Claim": "reports.claims",
    "ClaimResult": "reports.claims",
    "Comparison": "reports.claims",
    "evaluate_claims": "reports.claims",
    "ReportError": "reports.load",
    "StoreData": "reports.load",
    "open_store": "reports.load",
}

__all__ = ["ANALYTIC_CLAIMS", "CLAIMS_FORMATS", "FORMATS", "AnalyticCheck", "Claim", "ClaimResult", "Comparison",
           "ReportError", "StoreData", "build_claims", "build_report", "claims_in_store", "evaluate_claims",
           "open_store"]

__getattr__, __dir__ = lazy.lazy_exports(globals(), _EXPORTS, __all__)
