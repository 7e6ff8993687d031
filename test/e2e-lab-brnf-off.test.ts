// The lab end to end (issue 5) with br_netfilter off in the node namespaces; the suite is in
// test/helpers/lab-suite.ts. Needs root and a built dist/ (the agents run dist/cli/bin.js;
// scripts/test.sh builds it first).
import { labCrashSuite, labSuite } from './helpers/lab-suite.js';

labSuite({ brNetfilter: false, tag: 'la' });
// Once is enough: it does not depend on br_netfilter.
labCrashSuite('lc');
