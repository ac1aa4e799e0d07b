"""simkit.ui: Plotly figures and ipywidgets control panels (install ``simkit[ui]``).

Kept apart from the core: ``import simkit`` never imports this package, plotly or ipywidgets.
"""
