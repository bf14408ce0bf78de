"""Stage 1, frame to identity: the engine's frame loop (camera, detector, tracker, embedder,
matcher, analyzers), the recognition stage that confirms an identity across frames and gates
it on liveness, the open-set decision rule, emotion smoothing and the fault supervisor that
keeps the loop running through a failing component.

Modules: ``engine``, ``recognition``, ``decision``, ``tracker``, ``emotions``, ``faults``.
"""
