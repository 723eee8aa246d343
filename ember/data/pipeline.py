AUTOTUNE = -1
class Pipeline: pass
