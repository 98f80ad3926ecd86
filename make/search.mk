# Architecture search (issue 6): Cream-style prioritized-path search over Arch-Net student
# topologies, one run per MACs budget, each followed by the retraining its run wrote.
# SEARCH_BUDGETS=r100_shortcut: the 1.0x search restricted to shortcut-everywhere paths.
SEARCH_BUDGETS ?= r100 r75 r50

# Per budget: search, retrain the selected path, then the uniformly thinned student of the
# same MACs (scripts/thinned_topology.py) with the same recipe, as the baseline.
search-tiny-imagenet-resnet18: $(STAMP) ## 2w4a ResNet-18 student searches on Tiny-ImageNet-200 at 1.0x/0.75x/0.5x teacher MACs, each retrained next to a uniformly thinned student [SEARCH_BUDGETS=...] [THREADS=2] [SEARCH_ARGS=...]
	test -f $(TEACHERS)/resnet18_tiny_imagenet200_32px_seed0.pt || \
	  OMP_NUM_THREADS=$(THREADS) $(BIN)/archnet-teacher experiment=tiny_imagenet_resnet18
	for b in $(SEARCH_BUDGETS); do \
	  d=outputs/search_tiny_imagenet_resnet18_$$b/make; \
	  OMP_NUM_THREADS=$(THREADS) $(BIN)/archnet-search experiment=search_tiny_imagenet_resnet18_$$b hydra.run.dir=$$d $(SEARCH_ARGS) \
	    && PATH=$(BIN):$$PATH OMP_NUM_THREADS=$(THREADS) bash $$d/retrain.sh \
	    && $(BIN)/python scripts/thinned_topology.py $$d \
	    && PATH=$(BIN):$$PATH OMP_NUM_THREADS=$(THREADS) bash $$d/retrain_thinned.sh || exit 1; \
	done

search-demo: $(STAMP) ## a short search on the synthetic demo data (tiny ResNet teacher), then its retraining
	$(BIN)/archnet-teacher experiment=demo
	$(BIN)/archnet-search experiment=search_demo hydra.run.dir=outputs/search_demo/make
	PATH=$(BIN):$$PATH bash outputs/search_demo/make/retrain.sh

.PHONY: search-tiny-imagenet-resnet18 search-demo
