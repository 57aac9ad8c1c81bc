"""Reports: the Pareto plot and the HTML page of a search."""
