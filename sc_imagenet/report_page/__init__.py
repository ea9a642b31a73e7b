"""The build report: one static HTML page (funnel, stage table, pair galleries, dropped images,
plots, config) that opens from disk in any browser.

Pure rendering: `ReportData` (tables and arrays, gathered from a build folder by
`sc_imagenet.stages.report.gather_report`) in, `index.html` and its images out (`write_report`).
"""

from sc_imagenet.report_page.model import (
    FUNNEL,
    FUNNEL_KEYS,
    SECTION_NEEDS,
    USABLE_STATES,
    CategoryGallery,
    Detection,
    DroppedView,
    PairView,
    ReportData,
    StageView,
    TrainScores,
    TruthData,
)
from sc_imagenet.report_page.plots import CURVE_COLUMNS
from sc_imagenet.report_page.write import ASSETS, PAGE, ReportFile, write_report

__all__ = ["ASSETS", "CURVE_COLUMNS", "FUNNEL", "FUNNEL_KEYS", "PAGE", "SECTION_NEEDS", "USABLE_STATES",
           "CategoryGallery", "Detection", "DroppedView", "PairView", "ReportData", "ReportFile", "StageView",
           "TrainScores", "TruthData", "write_report"]
