"""The browser demo: classifier (the logic, no Gradio) and page (the Gradio page)."""
