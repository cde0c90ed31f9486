/* hello.c: a program built against the installed wf through pkg-config. */
#include <stdio.h>

#include <wf/wf.h>

int main(void)
{
    wf_registry *reg = NULL;
    wf_workflow *wf = NULL;
    if (wf_registry_new(&reg) != 0 || wf_workflow_new(&wf, "hello", reg) != 0)
        return 1;
    wf_registry_free(reg); /* the workflow keeps its own reference */
    printf("%s\n", wf_version_string());
    wf_workflow_free(wf);
    return 0;
}
