"""The admin API's pure side: authentication (``auth``) and the routes (``api``).

Workers serve admin requests with these (``workers/admin.py``); every write is sent to
the master (``master/admin.py``), which validates, stores and reloads.
"""
