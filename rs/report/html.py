"""The HTML report: one self-contained page (Jinja2, autoescaped) that needs no network to view.

Images are ``data:`` URIs (PNG, base64), the style sheet is inline, and the page loads no script, link, font or
image from anywhere else: it can be mailed, zipped or opened from a USB stick. A summary (facts, counts by reason
code and by ward, the overview map, the priority rule), then one ``<section class="flag">`` per flag in order of
priority.
"""

from __future__ import annotations

import base64

from jinja2 import Environment

from changewatch.rs.report.content import NO_FLAGS, NO_WARDS, ReportContent, sheet

TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{ c.title }}</title>
<style>
body { font-family: "DejaVu Sans", "Segoe UI", Arial, sans-serif; margin: 1.5em; color: #222; max-width: 70em; }
h1 { font-size: 1.6em; margin-bottom: .2em; }
table { border-collapse: collapse; margin: .5em 0 1em; }
td, th { border: 1px solid #bbb; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #eee; }
.swatch { display: inline-block; width: 1em; height: 1em; border: 1px solid #333; vertical-align: middle; }
img { max-width: 100%; }
section.flag { border-top: 2px solid #444; margin-top: 1.5em; padding-top: .5em; page-break-before: always; }
.rule { font-size: .9em; color: #555; }
</style>
</head>
<body>
<section class="summary">
<h1>{{ c.title }}</h1>
<img class="map" alt="overview map" src="{{ map_uri }}">
<table class="facts">
{% for label, text in c.facts %}<tr><th>{{ label }}</th><td>{{ text }}</td></tr>
{% endfor %}</table>
<h2>Flags by reason code</h2>
{% if not c.cases.by_reason %}<p>{{ no_flags }}</p>{% else %}
<table class="by-reason"><tr><th>reason code</th><th>flags</th></tr>
{% for code, n in c.cases.by_reason.items() %}<tr><td><span class="swatch" style="background: {{ c.colours[code] }}">\
</span> {{ code }}</td><td>{{ n }}</td></tr>
{% endfor %}</table>{% endif %}
<h2>Flags by ward</h2>
{% if c.cases.by_ward is none %}<p>{{ no_wards }}</p>{% elif not c.cases.by_ward %}<p>{{ no_flags }}</p>{% else %}
<table class="by-ward"><tr><th>ward</th><th>flags</th></tr>
{% for ward, n in c.cases.by_ward.items() %}<tr><td>{{ ward }}</td><td>{{ n }}</td></tr>
{% endfor %}</table>{% endif %}
<p class="rule">Flags are listed by priority: {{ c.priority_rule }}.</p>
</section>
{% for flag in flags %}
<section class="flag" id="flag-{{ flag.change_id }}">
<h2>Priority {{ flag.priority }}: change {{ flag.change_id }} ({{ flag.worst }})</h2>
<img class="chips" alt="before, after and change probability of change {{ flag.change_id }}" src="{{ flag.uri }}">
<table class="sheet">
{% for label, text in flag.fields %}<tr><th>{{ label }}</th><td>{{ text }}</td></tr>
{% endfor %}</table>
</section>
{% endfor %}
</body>
</html>
"""


def data_uri(png: bytes) -> str:
    """A PNG as a ``data:image/png;base64,...`` URI."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def render_html(content: ReportContent) -> str:
    """The report as one HTML page (UTF-8 text), every value autoescaped, every image inline."""
    flags = [{"change_id": int(row["change_id"]), "priority": int(row["priority"]), "worst": row["worst_reason"],
              "uri": data_uri(content.chips_png[int(row["change_id"])]), "fields": sheet(row)}
             for _, row in content.cases.table.iterrows()]
    template = Environment(autoescape=True).from_string(TEMPLATE)
    return template.render(c=content, map_uri=data_uri(content.map_png), flags=flags, no_flags=NO_FLAGS,
                           no_wards=NO_WARDS)
