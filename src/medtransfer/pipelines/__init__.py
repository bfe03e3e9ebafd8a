"""One way through medtransfer per data family: 2-D images (:mod:`.images`) and 3-D volumes (:mod:`.volumes`),
reached through the task kind (``TaskKind.family``); see :mod:`.base`. Nothing is registered on import."""
