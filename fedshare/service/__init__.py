"""The state folder of the served model: model store, request journal, inbox, fault points."""
