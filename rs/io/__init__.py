"""Reading and writing, shared by the stages: rasters, vector files, single files and whole output folders.

Rasters (``raster``: opening any raster, the probability COG), vector files (``vector``), single
files written atomically with failures reported as one line (``files``) and whole output folders
replaced at once (``staging``).
"""
