"""The infoscope Streamlit dashboard (``infoscope app``): browse scored runs, curate, export."""
