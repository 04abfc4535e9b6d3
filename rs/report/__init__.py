"""Inspection case sheets of a detect run: ``changewatch report RUN_DIR -o REPORT``.

One concern per module: ``cases`` (the flags as cases, their priority and work-order status), ``figures`` (the
overview map and chips, matplotlib), ``html`` (the self-contained HTML report, Jinja2), ``pdf`` (the PDF, fpdf2),
``write`` (the report folder, written as a whole). Importing this package loads none of them.
"""
