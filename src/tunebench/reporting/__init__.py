"""Tables in, text and figures out: the report (report), its figures (plots), the search
section (search_report), markdown tables (markdown). Imports the layers below."""
