"""A self-contained HTML page of what a run or an output folder holds, for eyes, not tools.

``contents`` finds the files, ``panels`` draws rasters (titled, with legend and scale bar),
``curves`` plots metrics.csv, ``errormap`` draws the score's tp/fp/fn polygons and ``page``
puts them on one HTML page with every image embedded (``geoseg report DIR``).
"""
