# Architecture search (issue 6): Cream-style prioritized-path search over Arch-Net student
# topologies, one run per MACs budget, each followed by the retraining its run wrote.
SEARCH_BUDGETS ?= r100 r75 r50

search-tiny-imagenet-resnet18: $(STAMP) ## search ResNet-18 students on Tiny-ImageNet at 1.0x/0.75x/0.5x teacher MACs, then retrain each [SEARCH_BUDGETS=...]
	$(BIN)/archnet-teacher data=tiny_imagenet teacher=resnet18 name=tiny_imagenet_resnet18_teacher
	for b in $(SEARCH_BUDGETS); do \
	  d=outputs/search_tiny_imagenet_resnet18_$$b/make; \
	  $(BIN)/archnet-search experiment=search_tiny_imagenet_resnet18_$$b hydra.run.dir=$$d \
	    && bash $$d/retrain.sh || exit 1; \
	done

search-demo: $(STAMP) ## a short search on the synthetic demo data (tiny ResNet teacher), then its retraining
	$(BIN)/archnet-teacher experiment=demo
	$(BIN)/archnet-search experiment=search_demo hydra.run.dir=outputs/search_demo/make
	bash outputs/search_demo/make/retrain.sh

.PHONY: search-tiny-imagenet-resnet18 search-demo
