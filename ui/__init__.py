"""Streamlit-side helpers shared by the pages: settings, widgets, URL state, charts, export, errors."""
