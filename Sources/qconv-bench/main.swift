import QConvKit

print("qconv-bench: not implemented yet")
